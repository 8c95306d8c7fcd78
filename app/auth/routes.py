from datetime import UTC, datetime
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import current_app, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from flask_login import current_user, login_required

from app import db, limiter
from app.addresses import normalize_address
from app.auth import bp
from app.auth.email import (
    queue_confirmation_email,
    queue_password_changed_email,
    queue_password_reset_email,
    queue_registration_attempt_email,
)
from app.auth.forms import (
    ConfirmResetForm,
    EndOtherSessionsForm,
    LoginForm,
    LogoutForm,
    RegistrationForm,
    ResetPasswordForm,
    ResetPasswordRequestForm,
)
from app.auth.sessions import (
    RESET_KEY,
    begin_reset,
    end_all_sessions,
    end_other_sessions,
    end_reset,
    is_this_session,
    reset_in_progress,
    sessions_of,
    sign_in,
    sign_out,
)
from app.i18n import current_locale
from app.models import EmailChange, User, decode_signed, hash_password
from app.ratelimits import (
    LoginAttempt,
    holds_device_cookie_for_typed_username,
    reset_email_allowed,
    trust_this_browser,
)
from app.security import check_login

INVALID_LINK = _l('This reset link is invalid or has expired.')


def is_safe_next(target):
    """Whether ``next`` is a path on this site, not a way off it."""
    if not target or not target.startswith('/') or target.startswith('//'):
        return False
    if '\\' in target or any(ord(char) < 32 for char in target):
        return False
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc


@bp.route('/login', methods=['GET', 'POST'])
@limiter.limit(
    lambda: current_app.config['RATELIMIT_LOGIN_PER_ADDRESS'],
    methods=['POST'],
    exempt_when=holds_device_cookie_for_typed_username,
)
def login():
    if current_user.is_authenticated:
        return redirect(url_for('main.index'))
    form = LoginForm()
    if form.validate_on_submit():
        user = db.session.scalar(
            sa.select(User).where(
                sa.func.lower(User.username) == form.username.data.strip().lower()
            )
        )
        # Counted before the password is checked; see app.ratelimits.
        attempt = LoginAttempt(form.username.data, user)
        if attempt.refused:
            return attempt.refusal_page()
        if check_login(user, form.password.data):
            attempt.succeeded(user)
            if user.locale is None:
                # An account made before languages were kept: it reads this page's.
                user.locale = current_locale()
            sign_in(user, remember=form.remember_me.data)
            next_page = request.args.get('next')
            if not is_safe_next(next_page):
                next_page = url_for('main.index')
            return redirect(next_page)
        flash(_('Invalid username or password'), 'error')
    return render_template('auth/login.html', title=_('Sign In'), form=form)


@bp.route('/logout', methods=['GET', 'POST'])
def logout():
    form = LogoutForm()
    if request.method == 'POST':
        if form.validate_on_submit():
            sign_out()
            flash(_('You have been logged out.'), 'info')
            # Straight to the login page: the index would ask to log in, a second message.
            return redirect(url_for('auth.login'))
        return redirect(url_for('main.index'))
    if not current_user.is_authenticated:
        return redirect(url_for('main.index'))
    return render_template('auth/logout.html', title=_('Log out'), form=form)


@bp.route('/register', methods=['GET', 'POST'])
@limiter.limit(lambda: current_app.config['RATELIMIT_REGISTER_PER_ADDRESS'], methods=['POST'])
def register():
    if current_user.is_authenticated:
        return redirect(url_for('main.index'))
    form = RegistrationForm()
    if form.validate_on_submit():
        address = form.email.data
        # The account's emails are in the language it registered in, until its owner
        # chooses another (the switch in the footer).
        user = User(username=form.username.data, email=address, locale=current_locale())
        user.set_password(form.password.data)
        # The unique index, not a question asked first, finds out whether the address
        # has an account: both ways do the same work and give the same answer, and the
        # email tells the owner of the address which it was.
        # An email about an account carries a reset link: it shares the reset emails'
        # silent limit per (client address, address), counted either way.
        may_email_owner = reset_email_allowed(address)
        # An address an account moved away from is kept for it while the move can be
        # undone (EmailChange.reserving): registering it then makes nothing, as if taken,
        # by the same statements: the account is written, then its savepoint undone.
        kept = db.session.scalar(EmailChange.reserving(address).limit(1)) is not None
        made = False
        savepoint = db.session.begin_nested()
        try:
            db.session.add(user)
            db.session.flush()
        except sa.exc.IntegrityError:
            savepoint.rollback()
        else:
            if kept:
                savepoint.rollback()
            else:
                savepoint.commit()
                made = True
        # Asked either way, so that both ways run the same statements: a registration
        # just now may have taken the name after the form checked it.
        holder = db.session.scalar(
            sa.select(User.id).where(sa.func.lower(User.username) == user.username.lower())
        )
        if holder is not None and holder != user.id:
            db.session.rollback()
            form.username.errors.append(_('Please use a different username.'))
            return render_template('auth/register.html', title=_('Register'), form=form)
        if made:
            queue_confirmation_email(user)
        else:
            # Queued past the limit too, as a message the worker builds and drops: a new
            # address always stores its confirmation, so a known one stores a row too.
            queue_registration_attempt_email(address, silenced=not may_email_owner)
        db.session.commit()
        flash(
            _(
                'Check your email: we sent a message to %(address)s. Open the link in it to '
                'confirm your address, then sign in.',
                address=address,
            ),
            'info',
        )
        return redirect(url_for('auth.login'))
    return render_template('auth/register.html', title=_('Register'), form=form)


@bp.route('/reset_password_request', methods=['GET', 'POST'])
@limiter.limit(lambda: current_app.config['RATELIMIT_RESET_PER_ADDRESS'], methods=['POST'])
def reset_password_request():
    if current_user.is_authenticated:
        return redirect(url_for('main.index'))
    form = ResetPasswordRequestForm()
    if form.validate_on_submit():
        address = normalize_address(form.email.data)
        # Known or not, the request costs the same here: it is stored as typed, and
        # the delivery worker looks the account up on its own cadence.
        if reset_email_allowed(address):  # per (client address, email): see app.ratelimits
            queue_password_reset_email(address)
            db.session.commit()
        flash(_('Check your email for the instructions to reset your password'), 'info')
        return redirect(url_for('auth.login'))
    return render_template('auth/reset_password_request.html', title=_('Reset Password'), form=form)


@bp.route('/reset_password/<token>', methods=['GET', 'POST'])
def reset_password(token):
    """Check the link, then keep on the server which account it resets, and drop the token.

    A link opened while this browser is already resetting another account's
    password asks first: a page on another site could otherwise open a link to
    the attacker's own account here, and the password typed next would be set on it.
    """
    if current_user.is_authenticated:
        return redirect(url_for('main.index'))
    user = User.verify_reset_password_token(token)
    if user is None:
        flash(str(INVALID_LINK), 'error')
        return redirect(url_for('auth.reset_password_request'))
    current = reset_in_progress()
    form = ConfirmResetForm()
    if current is not None and current.id != user.id and not form.validate_on_submit():
        return render_template(
            'auth/reset_password_switch.html',
            title=_('Reset Password'),
            form=form,
            current=current,
            other=user,
        )
    payload = decode_signed(token, require=['exp'])
    begin_reset(user, payload['state'], datetime.fromtimestamp(payload['exp'], UTC))
    return redirect(url_for('auth.reset_password_form'))


@bp.route('/reset_password', methods=['GET', 'POST'])
def reset_password_form():
    if current_user.is_authenticated:
        return redirect(url_for('main.index'))
    user = reset_in_progress()
    if user is None:
        end_reset()
        flash(str(INVALID_LINK), 'error')
        return redirect(url_for('auth.reset_password_request'))
    form = ResetPasswordForm(user)
    if form.validate_on_submit():
        # Compare-and-set on the old hash: of two submissions of one link,
        # only the first changes the password.
        if not user.swap_password_hash(hash_password(form.password.data)):
            db.session.rollback()
            end_reset()
            flash(str(INVALID_LINK), 'error')
            return redirect(url_for('auth.reset_password_request'))
        session.pop(RESET_KEY, None)
        end_all_sessions(user)  # this reset, and every session signed in as the user
        # A change of address asked for with the old password waits no more.
        EmailChange.cancel_pending(user)
        queue_password_changed_email(user)
        db.session.commit()  # the new password, the ended sessions and the notice together
        trust_this_browser(user)  # it has shown it reads the owner's email: app.ratelimits
        flash(_('Your password has been reset.'), 'success')
        return redirect(url_for('auth.login'))
    return render_template(
        'auth/reset_password.html', title=_('Reset Password'), form=form, account=user
    )


@bp.route('/sessions', methods=['GET', 'POST'])
@login_required
def sessions():
    """The browsers signed in to this account, and a button to sign out all the others."""
    form = EndOtherSessionsForm()
    if form.validate_on_submit():
        count = end_other_sessions(current_user)
        flash(
            ngettext(
                'Signed out of %(num)s other session.',
                'Signed out of %(num)s other sessions.',
                count,
            ),
            'success',
        )
        return redirect(url_for('auth.sessions'))
    rows = sessions_of(current_user)
    return render_template(
        'auth/sessions.html',
        title=_('Your sessions'),
        form=form,
        sessions=[(row, is_this_session(row)) for row in rows],
    )
