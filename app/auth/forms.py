import re

import sqlalchemy as sa
from flask_wtf import FlaskForm
from wtforms import BooleanField, PasswordField, StringField, SubmitField
from wtforms.validators import DataRequired, Email, EqualTo, Length, ValidationError

from app import db
from app.addresses import UndeliverableAddressError, deliverable_address, lookup_key
from app.models import User
from app.security import PASSWORD_MAX_LENGTH, StrongPassword, check_login

# Matched against the whole name (fullmatch): with re.match and `$`, 'Bob\n' passed,
# since `$` also matches before a trailing newline.
USERNAME_PATTERN = re.compile(r'[A-Za-z0-9_.-]+')
USERNAME_MESSAGE = 'Use only letters, numbers, dots, dashes and underscores.'


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
        'Username',
        validators=[
            DataRequired(),
            Length(max=64),
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
            form.username.errors.append('Please try again.')
        return False
    return True


class LoginForm(FlaskForm):
    username = StringField('Username', validators=[DataRequired(), Length(max=64)])
    password = PasswordField(
        'Password', validators=[DataRequired(), Length(max=PASSWORD_MAX_LENGTH)]
    )
    remember_me = BooleanField('Remember Me')
    submit = SubmitField('Sign In')


class RegistrationForm(FlaskForm):
    username = username_field()
    email = StringField(
        'Email', filters=[strip_spaces], validators=[DataRequired(), Length(max=120)]
    )
    password = PasswordField(
        'Password', validators=[DataRequired(), StrongPassword('username', 'email')]
    )
    password2 = PasswordField(
        'Repeat Password',
        validators=[DataRequired(), EqualTo('password', message='Passwords must match.')],
    )
    submit = SubmitField('Register')

    def validate_username(self, username):
        if username_taken(username.data):
            raise ValidationError('Please use a different username.')

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
        raise ValidationError(str(exc)) from None
    max_length = User.email.type.length
    if len(address) > max_length:
        raise ValidationError(f'Use an address of at most {max_length} characters.')
    return address


class ResetPasswordRequestForm(FlaskForm):
    email = StringField(
        'Email', filters=[strip_spaces], validators=[DataRequired(), Length(max=320), Email()]
    )
    submit = SubmitField('Request Password Reset')


class ResetPasswordForm(FlaskForm):
    password = PasswordField('Password', validators=[DataRequired(), StrongPassword()])
    password2 = PasswordField(
        'Repeat Password',
        validators=[DataRequired(), EqualTo('password', message='Passwords must match.')],
    )
    submit = SubmitField('Set New Password')

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
            raise ValidationError('That is not your current password.')


def current_password_field():
    return PasswordField(
        'Current password', validators=[DataRequired(), Length(max=PASSWORD_MAX_LENGTH)]
    )


class ChangePasswordForm(AccountForm):
    current_password = current_password_field()
    password = PasswordField('New password', validators=[DataRequired(), StrongPassword()])
    password2 = PasswordField(
        'Repeat new password',
        validators=[DataRequired(), EqualTo('password', message='Passwords must match.')],
    )
    submit = SubmitField('Change password')


class ChangeEmailForm(AccountForm):
    email = StringField(
        'New email address', filters=[strip_spaces], validators=[DataRequired(), Length(max=320)]
    )
    current_password = current_password_field()
    submit = SubmitField('Send a confirmation link')

    def validate_email(self, field):
        address = account_address(field.data)
        if lookup_key(address) == self.user.email_key:
            raise ValidationError('That is already your address.')
        field.data = address


class ButtonForm(FlaskForm):
    """A form that is only a button (and its CSRF token)."""

    submit = SubmitField('Confirm')


class LogoutForm(FlaskForm):
    submit = SubmitField('Log out')


class ConfirmResetForm(FlaskForm):
    submit = SubmitField('Reset this account instead')


class EndOtherSessionsForm(FlaskForm):
    submit = SubmitField('Sign out all other sessions')
