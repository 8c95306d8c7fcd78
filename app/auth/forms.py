import re

import sqlalchemy as sa
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, StringField, SubmitField
from wtforms.validators import Email, EqualTo, ValidationError

from app import db
from app.addresses import (
    UndeliverableAddressError,
    deliverable_address,
    describe_problem,
    lookup_key,
)
from app.models import User
from app.security import PASSWORD_MAX_LENGTH, StrongPassword, check_login
from app.validators import at_most, required

# Matched against the whole name (fullmatch): with re.match and `$`, 'Bob\n' passed,
# since `$` also matches before a trailing newline.
USERNAME_PATTERN = re.compile(r'[A-Za-z0-9_.-]+')
USERNAME_MESSAGE = _l('Use only letters, numbers, dots, dashes and underscores.')


def strip_spaces(value):
    """Spaces and line breaks around a typed address are not part of it."""
    return value.strip() if isinstance(value, str) else value


class FullMatch:
    """Form validator: the whole value must match the pattern, nothing before or after it."""

    def __init__(self, pattern, message):
        self.pattern = pattern
        self.message = message

    def __call__(self, form, field):
        if not self.pattern.fullmatch(field.data or ''):
            raise ValidationError(self.message)


def username_taken(username):
    """Whether an account already has this username, ignoring case."""
    query = sa.select(User.id).where(sa.func.lower(User.username) == username.lower())
    return db.session.scalar(query) is not None


def username_field():
    """The username field of registration and profile forms."""
    return StringField(
        _l('Username'),
        validators=[
            required(),
            at_most(64),
            FullMatch(USERNAME_PATTERN, USERNAME_MESSAGE),
        ],
    )


def commit_or_explain(form):
    """Commit the form's change, or say on the form why a concurrent request made it fail.

    The form checks that a name or address is free before the commit, and two requests
    can both pass that check; the unique indexes then refuse the second one. Checking
    the form again, now that the first one is committed, finds what to tell the person.
    """
    try:
        db.session.commit()
    except sa.exc.IntegrityError:
        db.session.rollback()
        if form.validate():
            form.username.errors.append(_('Please try again.'))
        return False
    return True


class LoginForm(FlaskForm):
    username = StringField(_l('Username'), validators=[required(), at_most(64)])
    password = PasswordField(_l('Password'), validators=[required(), at_most(PASSWORD_MAX_LENGTH)])
    remember_me = BooleanField(_l('Remember Me'))
    submit = SubmitField(_l('Sign In'))


class RegistrationForm(FlaskForm):
    username = username_field()
    email = StringField(_l('Email'), filters=[strip_spaces], validators=[required(), at_most(120)])
    password = PasswordField(
        _l('Password'), validators=[required(), StrongPassword('username', 'email')]
    )
    password2 = PasswordField(
        _l('Repeat Password'),
        validators=[required(), EqualTo('password', message=_l('Passwords must match.'))],
    )
    submit = SubmitField(_l('Register'))

    def validate_username(self, username):
        if username_taken(username.data):
            raise ValidationError(_('Please use a different username.'))

    # Whether an account already has the address is not checked here: the form must
    # not tell. The register view finds out from the unique index, and either way
    # says "check your email".
    def validate_email(self, email):
        email.data = account_address(email.data)


def account_address(typed):
    """The normal form of an address an account can have, or a ValidationError saying why not."""
    try:
        address = deliverable_address(typed)
    except UndeliverableAddressError as exc:
        raise ValidationError(describe_problem(exc)) from None
    max_length = User.email.type.length
    if len(address) > max_length:
        raise ValidationError(
            _('Use an address of at most %(count)d characters.', count=max_length)
        )
    return address


class ResetPasswordRequestForm(FlaskForm):
    email = StringField(
        _l('Email'),
        filters=[strip_spaces],
        validators=[
            required(),
            at_most(320),
            Email(_l('This is not a valid email address.')),
        ],
    )
    submit = SubmitField(_l('Request Password Reset'))


class ResetPasswordForm(FlaskForm):
    password = PasswordField(_l('Password'), validators=[required(), StrongPassword()])
    password2 = PasswordField(
        _l('Repeat Password'),
        validators=[required(), EqualTo('password', message=_l('Passwords must match.'))],
    )
    submit = SubmitField(_l('Set New Password'))

    def __init__(self, user, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Read by StrongPassword: the new password is checked against the account.
        self.account_username = user.username
        self.account_email = user.email
        self.account_password_hash = user.password_hash


class AccountForm(FlaskForm):
    """A form of the settings pages: it knows the account, for the password checks."""

    def __init__(self, user, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        # Read by StrongPassword: a new password is checked against the account.
        self.account_username = user.username
        self.account_email = user.email
        self.account_password_hash = user.password_hash

    def validate_current_password(self, field):
        # check_login spends the same time whatever it finds (app.security).
        if not check_login(self.user, field.data or ''):
            raise ValidationError(_('That is not your current password.'))


def current_password_field():
    return PasswordField(
        _l('Current password'), validators=[required(), at_most(PASSWORD_MAX_LENGTH)]
    )


class ChangePasswordForm(AccountForm):
    current_password = current_password_field()
    password = PasswordField(_l('New password'), validators=[required(), StrongPassword()])
    password2 = PasswordField(
        _l('Repeat new password'),
        validators=[required(), EqualTo('password', message=_l('Passwords must match.'))],
    )
    submit = SubmitField(_l('Change password'))


class ChangeEmailForm(AccountForm):
    email = StringField(
        _l('New email address'),
        filters=[strip_spaces],
        validators=[required(), at_most(320)],
    )
    current_password = current_password_field()
    submit = SubmitField(_l('Send a confirmation link'))

    def validate_email(self, field):
        address = account_address(field.data)
        if lookup_key(address) == self.user.email_key:
            raise ValidationError(_('That is already your address.'))
        field.data = address


class ButtonForm(FlaskForm):
    """A form that is only a button (and its CSRF token)."""

    submit = SubmitField(_l('Confirm'))


class LogoutForm(FlaskForm):
    submit = SubmitField(_l('Log out'))


class ConfirmResetForm(FlaskForm):
    submit = SubmitField(_l('Reset this account instead'))


class EndOtherSessionsForm(FlaskForm):
    submit = SubmitField(_l('Sign out all other sessions'))
