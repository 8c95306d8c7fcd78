"""The account's own pages: settings, a new password, a new address, and the links mail brings.

Every link here works in two steps: opening it (GET) only shows what it will do,
and the button on that page (POST) does it. A mail scanner that fetches links
before the owner does changes nothing, and the link still works for the owner.

Each link does what the thing it names still allows, checked as it is used:
- confirm_email: the account still has the address the link was sent to, and it is
  not confirmed yet (a fingerprint of both travels in the link);
- confirm_new_email: the change is still waiting, and the account still has the
  address it was asked from;
- undo_email_change: the change is still waiting (then it is cancelled) or made and
  the account still has its new address (then the old one comes back).
Used once, each of those stops being true, so no link works twice.
"""

from datetime import timedelta

import sqlalchemy as sa
from flask import current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from flask_login import current_user, login_required, logout_user

from app import db, limiter
from app.addresses import lookup_key
from app.auth import bp
from app.auth.email import (
    queue_confirmation_email,
    queue_email_change_emails,
    queue_email_change_notice,
    queue_password_changed_email,
)
from app.auth.forms import ButtonForm, ChangeEmailForm, ChangePasswordForm, EndOtherSessionsForm
from app.auth.routes import is_safe_next
from app.auth.sessions import (
    begin_reset,
    end_all_sessions,
    end_other_sessions,
    is_this_session,
    sessions_of,
)
from app.auth.tokens import (
    CONFIRM_EMAIL,
    CONFIRM_NEW_EMAIL,
    UNDO_EMAIL_CHANGE,
    read_link_token,
)
from app.i18n import join_sentences
from app.models import EmailChange, User, hash_password, utcnow

INVALID_CONFIRM_LINK = _l('This confirmation link is invalid or has expired.')
INVALID_UNDO_LINK = _l('This link is invalid or has expired, or the change was already undone.')


def per_account():
    """The rate-limit key of the signed-in account."""
    return f'account:{current_user.id}'


# Both forms check the current password: one budget of guesses for the two.
account_changes_limit = limiter.shared_limit(
    lambda: current_app.config['RATELIMIT_ACCOUNT_CHANGES'],
    scope='account-changes',
    key_func=per_account,
    methods=['POST'],
)


def signed_in_as_someone_else(user):
    """The page saying a link is for another account, when this browser is signed in as one."""
    if current_user.is_authenticated and current_user.id != user.id:
        page = render_template('auth/link_for_other_account.html', title=_('Another account'))
        return page, 403
    return None


def signed_out(count):
    """The sentence a count of ended sessions adds to a message, or None for none."""
    if not count:
        return None
    return ngettext(
        '%(num)s other session was signed out.', '%(num)s other sessions were signed out.', count
    )


def after_link():
    """Where a used link leads: the settings of a signed-in account, else the login page."""
    if current_user.is_authenticated:
        return redirect(url_for('auth.settings'))
    return redirect(url_for('auth.login'))


@bp.route('/settings')
@login_required
def settings():
    """The account's address, password and sessions, in one place."""
    rows = sessions_of(current_user)
    return render_template(
        'auth/settings.html',
        title=_('Settings'),
        pending=current_user.pending_email_change(),
        button=ButtonForm(),
        sessions_form=EndOtherSessionsForm(),
        sessions=[(row, is_this_session(row)) for row in rows],
    )


@bp.route('/settings/password', methods=['GET', 'POST'])
@login_required
@account_changes_limit
def change_password():
    form = ChangePasswordForm(current_user)
    if form.validate_on_submit():
        user = current_user._get_current_object()
        # Against the hash the form was checked against, as a reset does.
        if not user.swap_password_hash(hash_password(form.password.data)):
            db.session.rollback()
            flash(_('Your password was changed meanwhile. Try again.'), 'error')
            return redirect(url_for('auth.change_password'))
        db.session.refresh(user)
        # Whoever else knew the old password may have asked to move the account.
        EmailChange.cancel_pending(user)
        queue_password_changed_email(user, signed_in=True)
        count = end_other_sessions(user)  # commits the new password, the notice and the rest
        flash(join_sentences(_('Your password has been changed.'), signed_out(count)), 'success')
        return redirect(url_for('auth.settings'))
    return render_template('auth/change_password.html', title=_('Change your password'), form=form)


@bp.route('/settings/email', methods=['GET', 'POST'])
@login_required
@account_changes_limit
def change_email():
    """Ask to move the account to a new address: nothing changes until the link is used.

    Whether another account has the new address is found out when the email leaves
    (app.auth.email), so this page answers the same either way.
    """
    form = ChangeEmailForm(current_user)
    if form.validate_on_submit():
        user = current_user._get_current_object()
        # Only while the password is still the one the form checked (holding the row): a
        # new password cancels waiting changes, and one asked for with the old password
        # must not slip in after it.
        if not user.swap_password_hash(User.password_hash):
            db.session.rollback()
            flash(_('Your password was changed meanwhile. Try again.'), 'error')
            return redirect(url_for('auth.change_email'))
        EmailChange.cancel_pending(user)  # the newest request is the one that counts
        change = EmailChange(
            user_id=user.id,
            old_email=user.email,
            old_email_key=user.email_key,
            old_confirmed=user.email_confirmed,
            new_email=form.email.data,
            status=EmailChange.PENDING,
            requested_at=utcnow(),
        )
        db.session.add(change)
        db.session.flush()
        queue_email_change_emails(change)
        db.session.commit()
        # The settings page says, below, where email goes until then: not twice.
        flash(_('We sent a link to %(new)s.', new=change.new_email), 'info')
        return redirect(url_for('auth.settings'))
    return render_template(
        'auth/change_email.html', title=_('Change your email address'), form=form
    )


@bp.route('/settings/email/cancel', methods=['POST'])
@login_required
def cancel_email_change():
    form = ButtonForm()
    if form.validate_on_submit():
        EmailChange.cancel_pending(current_user)
        db.session.commit()
        flash(_('The change of address is cancelled.'), 'info')
    return redirect(url_for('auth.settings'))


@bp.route('/confirm_email/resend', methods=['POST'])
@login_required
@limiter.limit(
    lambda: current_app.config['RATELIMIT_CONFIRM_RESEND'], key_func=per_account, methods=['POST']
)
def resend_confirmation():
    form = ButtonForm()
    if form.validate_on_submit():
        if current_user.email_confirmed:
            flash(_('Your email address is already confirmed.'), 'info')
        else:
            queue_confirmation_email(current_user)
            db.session.commit()
            flash(
                _('We sent a new confirmation link to %(address)s.', address=current_user.email),
                'info',
            )
    next_page = request.args.get('next')
    return redirect(next_page if is_safe_next(next_page) else url_for('auth.settings'))


def confirmable(token):
    """The account a confirmation link is for, if it can still confirm its address."""
    payload = read_link_token(CONFIRM_EMAIL, token, 'user_id', 'email', 'state')
    if payload is None:
        return None, None
    user = db.session.get(User, payload['user_id'])
    if (
        user is None
        or user.email_key != lookup_key(payload['email'])
        or not user.has_confirm_state(payload['state'])
    ):
        return None, payload
    return user, payload


@bp.route('/confirm_email/<token>', methods=['GET', 'POST'])
def confirm_email(token):
    """Confirm the account's address: the page names the account, its button confirms."""
    user, payload = confirmable(token)
    if user is None:
        already = payload and db.session.get(User, payload['user_id'])
        if already and already.email_confirmed and already.email == payload['email']:
            flash(_('Your email address is already confirmed.'), 'info')
        else:
            flash(str(INVALID_CONFIRM_LINK), 'error')
        return after_link()
    refusal = signed_in_as_someone_else(user)
    if refusal:
        return refusal
    form = ButtonForm()
    if form.validate_on_submit():
        # Compare-and-set: of two submissions of one link, the first confirms.
        confirmed = db.session.execute(
            sa.update(User)
            .where(
                User.id == user.id,
                User.email_key == user.email_key,
                User.email_confirmed_at.is_(None),
            )
            .values(email_confirmed_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount
        db.session.commit()
        if confirmed == 1:
            flash(_('Thank you: %(address)s is confirmed.', address=user.email), 'success')
        else:
            flash(_('Your email address is already confirmed.'), 'info')
        return after_link()
    return render_template(
        'auth/confirm_email.html', title=_('Confirm your email address'), form=form, account=user
    )


def move_to(user, address, now):
    """Give ``user`` the confirmed ``address``, unless another account has it or keeps it.

    False when the address belongs to another account, or is kept for one that moved
    away from it and may still undo that (EmailChange.reserving).
    """
    kept = EmailChange.reserving(address, now).where(EmailChange.user_id != user.id)
    if db.session.scalar(kept.limit(1)) is not None:
        return False
    user.email = address
    user.email_confirmed_at = now
    try:
        with db.session.begin_nested():
            db.session.flush()
    except sa.exc.IntegrityError:
        return False
    return True


def confirmable_change(token):
    """The change a new address's link can still make, or None."""
    payload = read_link_token(CONFIRM_NEW_EMAIL, token, 'change_id', 'email')
    if payload is None:
        return None
    change = db.session.get(EmailChange, payload['change_id'])
    if (
        change is None
        or change.status != EmailChange.PENDING
        or change.new_email != payload['email']
        or change.user.email != change.old_email  # the account moved since it was asked
    ):
        return None
    return change


@bp.route('/confirm_new_email/<token>', methods=['GET', 'POST'])
def confirm_new_email(token):
    """Move the account to its new address, and tell the old one."""
    change = confirmable_change(token)
    if change is None:
        flash(str(INVALID_CONFIRM_LINK), 'error')
        return after_link()
    user = change.user
    refusal = signed_in_as_someone_else(user)
    if refusal:
        return refusal
    form = ButtonForm()
    if form.validate_on_submit():
        now = utcnow()
        if not change.move_on(EmailChange.CONFIRMED, confirmed_at=now):
            db.session.rollback()
            flash(str(INVALID_CONFIRM_LINK), 'error')
            return after_link()
        if not move_to(user, change.new_email, now):
            db.session.rollback()
            flash(
                _(
                    '%(new)s belongs to another account now, so yours keeps %(old)s.',
                    new=change.new_email,
                    old=change.old_email,
                ),
                'error',
            )
            return after_link()
        db.session.refresh(change)
        queue_email_change_notice(change, 'confirmed')
        db.session.commit()
        flash(_('Your email address is now %(address)s.', address=user.email), 'success')
        return after_link()
    return render_template(
        'auth/confirm_new_email.html', title=_('Confirm your new address'), form=form, change=change
    )


def later_changes(change):
    """The changes of the same account made after ``change``, oldest first."""
    return db.session.scalars(
        sa.select(EmailChange)
        .where(
            EmailChange.user_id == change.user_id,
            EmailChange.id > change.id,
            EmailChange.status == EmailChange.CONFIRMED,
        )
        .order_by(EmailChange.id)
    ).all()


def undoable_change(token):
    """The change the old address's link can still cancel or undo, or None.

    Only an address that was confirmed when the change was asked for is trusted with
    it. A change made is undone with every change made after it (a thief may have
    moved the account on again), as long as the account still has the address the
    last of them gave it.
    """
    payload = read_link_token(UNDO_EMAIL_CHANGE, token, 'change_id', 'email')
    if payload is None:
        return None
    change = db.session.get(EmailChange, payload['change_id'])
    if change is None or change.old_email != payload['email'] or not change.old_confirmed:
        return None
    user = change.user
    if change.status == EmailChange.PENDING and user.email == change.old_email:
        return change
    if change.status == EmailChange.CONFIRMED:
        last = ([change, *later_changes(change)])[-1]
        if user.email == last.new_email:
            return change
    return None


@bp.route('/undo_email_change/<token>', methods=['GET', 'POST'])
def undo_email_change(token):
    """From the old address: stop the change, or undo it, then choose a new password.

    Whoever asked for the change knew the password, so every session ends, and this
    browser goes straight on to set a new password: the link showed it reads the
    old address's email, which is what a reset link shows.
    """
    change = undoable_change(token)
    if change is None:
        flash(str(INVALID_UNDO_LINK), 'error')
        return after_link()
    user = change.user
    refusal = signed_in_as_someone_else(user)
    if refusal:
        return refusal
    form = ButtonForm()
    if form.validate_on_submit():
        made = change.status == EmailChange.CONFIRMED
        ended = EmailChange.UNDONE if made else EmailChange.CANCELLED
        if not change.move_on(ended, ended_at=utcnow()):
            db.session.rollback()
            flash(str(INVALID_UNDO_LINK), 'error')
            return after_link()
        EmailChange.cancel_pending(user)
        if made:
            for later in later_changes(change):
                later.status, later.ended_at = EmailChange.UNDONE, utcnow()
            user.email = change.old_email
            user.email_confirmed_at = utcnow()
        try:
            db.session.flush()
        except sa.exc.IntegrityError:
            db.session.rollback()
            flash(
                _(
                    '%(old)s belongs to another account now, so it cannot come back. Reset '
                    'your password from the address the account has.',
                    old=change.old_email,
                ),
                'error',
            )
            return redirect(url_for('auth.reset_password_request'))
        end_all_sessions(user)
        db.session.commit()
        logout_user()
        ttl = current_app.config['RESET_PASSWORD_TOKEN_TTL']
        begin_reset(user, user.reset_state(), utcnow() + timedelta(seconds=ttl))
        if made:
            flash(
                _(
                    'Your email address is %(address)s again, and every session is signed out.',
                    address=user.email,
                ),
                'success',
            )
        else:
            flash(
                _('The change of address is cancelled, and every session is signed out.'), 'success'
            )
        flash(
            _('Now choose a new password: whoever asked for the change knew the old one.'), 'info'
        )
        return redirect(url_for('auth.reset_password_form'))
    return render_template(
        'auth/undo_email_change.html', title=_('Undo a change of address'), form=form, change=change
    )
