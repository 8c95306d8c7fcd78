"""The kinds of email auth sends, and how each is built when it leaves."""

from flask import current_app, url_for
from flask_babel import lazy_gettext as _l

from app import db
from app.mail import DropMessage, Envelope, email_kind, queue_email
from app.models import User


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


def queue_password_changed_email(user):
    """Queue the notice that the password of ``user`` was changed, in the current transaction."""
    return queue_email('password_changed', {'user_id': user.id}, recipient=user.email)


@email_kind('password_changed', subject=_l('[Microblog] Your password was changed'))
def build_password_changed_email(data):
    """Tell the account's owner that its password was changed, and what to do if it was not them."""
    user = db.session.get(User, data['user_id'])
    if user is None:
        raise DropMessage('the account no longer exists')
    return Envelope(
        to=user.email,
        context={'user': user, 'reset_request_url': public_url('auth.reset_password_request')},
        locale=user.locale,
    )
