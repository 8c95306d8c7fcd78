"""The kinds of email auth sends, and how each is built when it leaves."""

from datetime import timedelta

from flask import current_app, url_for
from flask_babel import lazy_gettext as _l

from app import db
from app.addresses import lookup_key
from app.auth.tokens import (
    CONFIRM_EMAIL,
    CONFIRM_NEW_EMAIL,
    UNDO_EMAIL_CHANGE,
    make_link_token,
)
from app.mail import DropMessage, Envelope, email_kind, queue_email
from app.models import EmailChange, User, utcnow


def public_url(endpoint, **values):
    """An absolute URL on the site's configured public address (never the request's Host)."""
    return url_for(
        endpoint, _external=True, _scheme=current_app.config['PREFERRED_URL_SCHEME'], **values
    )


def queue_password_reset_email(address):
    """Queue the reset email for whoever has ``address``, in the current transaction.

    The address is stored as typed (normalised): whether an account has it is
    found out by the delivery worker, on its own cadence, so that the request
    costs the same whoever asks.
    """
    return queue_email('reset_password', {'email': address}, recipient=address)


@email_kind(
    'reset_password', subject=_l('[Microblog] Reset Your Password'), wake=False, expires=True
)
def build_password_reset_email(data):
    """The reset email, with a link minted now: valid for its whole lifetime from here."""
    user = db.session.scalar(User.by_email(data['email']))
    decoy = None
    if user is None:
        # The same work as for an account, so that the time the worker's pass takes
        # (in the web process, with the thread backend) does not tell either.
        user = User(id=0, username='nobody', email=data['email'], password_hash='')
        decoy = 'no account has this address'
    ttl = current_app.config['RESET_PASSWORD_TOKEN_TTL']
    token = user.get_reset_password_token(ttl)
    # The account's language decides, never the requester's. A decoy is rendered in
    # the default language: the same work, and nothing learnt about the address.
    return Envelope(
        locale=user.locale if decoy is None else None,
        to=user.email if decoy is None else 'nobody@example.com',
        context={
            'user': user,
            'reset_url': public_url('auth.reset_password', token=token),
            'valid_for': ttl,  # seconds, in words in the email's language: | duration
        },
        decoy=decoy,
    )


def queue_password_changed_email(user, signed_in=False):
    """Queue the notice that the password of ``user`` was changed, in the current transaction.

    ``signed_in``: changed from the settings page (that session stays signed in),
    rather than by a reset link (which signs every session out).
    """
    data = {'user_id': user.id, 'signed_in': bool(signed_in)}
    return queue_email('password_changed', data, recipient=user.email)


@email_kind('password_changed', subject=_l('[Microblog] Your password was changed'))
def build_password_changed_email(data):
    """Tell the account's owner that its password was changed, and what to do if it was not them."""
    user = db.session.get(User, data['user_id'])
    if user is None:
        raise DropMessage('the account no longer exists')
    return Envelope(
        to=user.email,
        context={
            'user': user,
            'signed_in': bool(data.get('signed_in')),
            'reset_request_url': public_url('auth.reset_password_request'),
        },
        locale=user.locale,
    )


def link_lifetime(setting):
    """The lifetime a setting gives, in seconds, and the moment a link minted now expires."""
    seconds = current_app.config[setting]
    return seconds, utcnow() + timedelta(seconds=seconds)


def queue_confirmation_email(user):
    """Queue the link that confirms the address of ``user`` (after registering, or again)."""
    data = {'user_id': user.id, 'email': user.email}
    return queue_email('confirm_email', data, recipient=user.email)


# Registering queues either this or the next kind, depending on whether the address
# already has an account; both wait for the worker's cadence (wake=False), so that
# the request does the same work either way.
@email_kind(
    'confirm_email', subject=_l('[Microblog] Confirm your email address'), wake=False, expires=True
)
def build_confirmation_email(data):
    """The link confirming the account's address, minted now, while it is still unconfirmed."""
    user = db.session.get(User, data['user_id'])
    if user is None:
        raise DropMessage('the account no longer exists')
    if user.email_key != lookup_key(data['email']):
        raise DropMessage('the account has another address now')
    if user.email_confirmed:
        raise DropMessage('the address is already confirmed')
    seconds, expires_at = link_lifetime('CONFIRM_EMAIL_TOKEN_TTL')
    token = make_link_token(
        CONFIRM_EMAIL, expires_at, user_id=user.id, email=user.email, state=user.confirm_state()
    )
    return Envelope(
        to=user.email,
        context={
            'user': user,
            'confirm_url': public_url('auth.confirm_email', token=token),
            'valid_for': seconds,  # in words in the email's language: | duration
        },
        locale=user.locale,
    )


def queue_registration_attempt_email(address, silenced=False):
    """Queue the notice that someone tried to register with ``address``, which has an account.

    ``silenced``: the reset emails' limit for this client and address is spent, so the
    message is built like a real one when it leaves, then dropped, never sent.
    """
    data = {'email': address, 'silenced': bool(silenced)}
    return queue_email('registration_attempt', data, recipient=address)


@email_kind(
    'registration_attempt',
    subject=_l('[Microblog] You already have an account'),
    wake=False,
    expires=True,
)
def build_registration_attempt_email(data):
    """Tell the owner of an address that it was used to register, with a reset link."""
    user = db.session.scalar(User.by_email(data['email']))
    if user is None:
        raise DropMessage('no account has this address any more')
    ttl = current_app.config['RESET_PASSWORD_TOKEN_TTL']
    token = user.get_reset_password_token(ttl)
    return Envelope(
        to=user.email,
        decoy='over the limit of reset emails for this client' if data.get('silenced') else None,
        context={
            'user': user,
            'login_url': public_url('auth.login'),
            'reset_url': public_url('auth.reset_password', token=token),
            'valid_for': ttl,  # in words in the email's language: | duration
        },
        locale=user.locale,
    )


def queue_email_change_emails(change):
    """Queue the link to the new address and the notice to the old one, for ``change``."""
    queue_email('confirm_new_email', {'change_id': change.id}, recipient=change.new_email)
    queue_email_change_notice(change, 'requested')


def queue_email_change_notice(change, stage):
    """Queue the notice to the old address that a change was asked for, or made."""
    data = {'change_id': change.id, 'stage': stage}
    return queue_email('email_change_notice', data, recipient=change.old_email)


def _change(data):
    change = db.session.get(EmailChange, data['change_id'])
    if change is None:
        raise DropMessage('the change no longer exists')
    return change


@email_kind(
    'confirm_new_email', subject=_l('[Microblog] Confirm your new email address'), expires=True
)
def build_new_address_email(data):
    """The link that moves the account to its new address, unless another account has it.

    Whether another account has the address is found out here, as the message
    leaves: asking for the change gives the same answer either way.
    """
    change = _change(data)
    if change.status != EmailChange.PENDING:
        raise DropMessage(f'the change is {change.status}')
    owner = db.session.scalar(User.by_email(change.new_email))
    kept = EmailChange.reserving(change.new_email).where(EmailChange.user_id != change.user_id)
    if (owner is not None and owner.id != change.user_id) or db.session.scalar(kept.limit(1)):
        return Envelope(
            to=change.new_email,
            context={'change': change, 'taken': True, 'login_url': public_url('auth.login')},
            locale=owner.locale if owner is not None else None,
        )
    seconds, expires_at = link_lifetime('CONFIRM_EMAIL_TOKEN_TTL')
    token = make_link_token(
        CONFIRM_NEW_EMAIL, expires_at, change_id=change.id, email=change.new_email
    )
    return Envelope(
        to=change.new_email,
        context={
            'change': change,
            'taken': False,
            'user': change.user,
            'confirm_url': public_url('auth.confirm_new_email', token=token),
            'valid_for': seconds,  # in words in the email's language: | duration
        },
        locale=change.user.locale,
    )


@email_kind('email_change_notice', subject=_l('[Microblog] A change of your email address'))
def build_email_change_notice(data):
    """Tell the old address of a change asked for or made, with a link to stop or undo it."""
    change = _change(data)
    stage = data.get('stage')
    if stage not in ('requested', 'confirmed'):
        raise DropMessage(f'no such stage: {stage!r}')
    if change.status in (EmailChange.CANCELLED, EmailChange.UNDONE):
        raise DropMessage(f'the change is {change.status}')
    seconds, expires_at = link_lifetime('EMAIL_CHANGE_UNDO_LIFETIME')
    undo_url = None
    if change.old_confirmed:  # an address never confirmed is not trusted to undo anything
        token = make_link_token(
            UNDO_EMAIL_CHANGE, expires_at, change_id=change.id, email=change.old_email
        )
        undo_url = public_url('auth.undo_email_change', token=token)
    return Envelope(
        to=change.old_email,
        context={
            'change': change,
            'user': change.user,
            'made': change.status == EmailChange.CONFIRMED,
            'undo_url': undo_url,
            'valid_for': seconds,  # in words in the email's language: | duration
            'reset_request_url': public_url('auth.reset_password_request'),
        },
        locale=change.user.locale,
    )
