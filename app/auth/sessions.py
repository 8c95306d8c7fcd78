"""Sessions kept on the server: sign in, sign out, end the others, and resets in progress.

Flask's signed cookie still carries what any visitor needs (the CSRF token, flashed
messages) and, for a signed-in browser, one random key. The key's SHA-256 names a
``UserSession`` row: no row, no session. So logging out, a password change and "log
out other sessions" end a session for real, however the cookie was copied; and a
reset in progress keeps on the server which account it changes, not a token.

"Remember me" makes the cookie outlive the browser (a permanent Flask session) and
the row live REMEMBER_ME_LIFETIME instead of SESSION_LIFETIME. Flask signs the
cookie with SECRET_KEY and accepts SECRET_KEY_FALLBACKS, and it is signed again
under the current key whenever it is sent, so a key rotation logs nobody out.
"""

import hashlib
import secrets
from datetime import timedelta
from functools import lru_cache

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import current_app, request, session
from flask.sessions import SecureCookieSessionInterface
from flask_babel import gettext
from flask_login import current_user, login_user, logout_user
from itsdangerous import BadSignature, URLSafeTimedSerializer

from app import db, login
from app.i18n import SESSION_KEY as LOCALE_KEY
from app.models import UserSession, utcnow

RESET_KEY = 'reset_session'
# How often a session's "last seen" (and its user's) is written: a page view need
# not be a write transaction.
TOUCH_INTERVAL = timedelta(minutes=1)


def _hash(key):
    return hashlib.sha256(key.encode()).hexdigest()


def _new_row(user, purpose, lifetime, **values):
    key = secrets.token_urlsafe(32)
    now = utcnow()
    row = UserSession(
        key_hash=_hash(key),
        user_id=user.id,
        purpose=purpose,
        created_at=now,
        last_seen_at=now,
        expires_at=now + lifetime,
        ip_address=(request.remote_addr or '')[:45] or None,
        device=describe_device(request.user_agent.string),
        **values,
    )
    db.session.add(row)
    return key, row


# Run on every request: built once, so that only its execution is paid for each time.
_FIND = (
    sa.select(UserSession)
    .where(
        UserSession.key_hash == sa.bindparam('key_hash'),
        UserSession.purpose == sa.bindparam('purpose'),
    )
    .options(so.joinedload(UserSession.user))
)


def _find(key, purpose):
    """The live row for a key from a cookie, or None."""
    # The key comes from a cookie signed with SECRET_KEY (None when there is none), so
    # only a key this app made can be there; and no other string hashes to a stored row.
    if not isinstance(key, str):
        return None
    row = db.session.scalar(_FIND, {'key_hash': _hash(key), 'purpose': purpose})
    if row is None or row.expires_at <= utcnow():
        return None
    return row


def sign_in(user, *, remember):
    """Start a session for ``user`` in this browser; a successful login also ends reset links."""
    config = current_app.config
    lifetime = config['REMEMBER_ME_LIFETIME' if remember else 'SESSION_LIFETIME']
    # The account's expired rows go as a new one comes, so the table holds live ones.
    db.session.execute(
        sa.delete(UserSession)
        .where(UserSession.user_id == user.id, UserSession.expires_at <= utcnow())
        .execution_options(synchronize_session=False)
    )
    key, _ = _new_row(user, UserSession.LOGIN, timedelta(seconds=lifetime), remember=remember)
    user.last_login_at = user.last_seen = utcnow()  # reset links sent before now are dead
    end_reset()
    db.session.commit()
    session.permanent = remember
    user.session_key = key
    # "Remember me" is the permanent session above, not Flask-Login's cookie of its own.
    login_user(user)


def sign_out():
    """End this browser's session, on the server and in the cookie."""
    key = current_user.get_id() if current_user.is_authenticated else None
    # The pages after logout stay in the language the account reads.
    locale = current_user.locale if current_user.is_authenticated else None
    row = _find(key, UserSession.LOGIN)
    if row is not None:
        db.session.delete(row)
        db.session.commit()
    logout_user()
    session.clear()
    if locale:
        session[LOCALE_KEY] = locale


def end_other_sessions(user):
    """End every session of ``user`` but this browser's; how many were ended."""
    this_key = current_user.get_id() if current_user.is_authenticated else None
    query = sa.delete(UserSession).where(
        UserSession.user_id == user.id, UserSession.purpose == UserSession.LOGIN
    )
    if this_key:
        query = query.where(UserSession.key_hash != _hash(this_key))
    count = db.session.execute(query.execution_options(synchronize_session=False)).rowcount
    db.session.commit()
    return count


def end_all_sessions(user):
    """End every session and reset in progress of ``user`` (in the current transaction)."""
    db.session.execute(
        sa.delete(UserSession)
        .where(UserSession.user_id == user.id)
        .execution_options(synchronize_session=False)
    )


def sessions_of(user):
    """The live sign-in sessions of ``user``, most recently used first."""
    return db.session.scalars(
        sa.select(UserSession)
        .where(
            UserSession.user_id == user.id,
            UserSession.purpose == UserSession.LOGIN,
            UserSession.expires_at > utcnow(),
        )
        .order_by(UserSession.last_seen_at.desc(), UserSession.id.desc())
    ).all()


def is_this_session(row):
    """Whether ``row`` is the session of the browser making this request."""
    key = current_user.get_id() if current_user.is_authenticated else None
    return bool(key) and row.key_hash == _hash(key)


@login.user_loader
def load_user(key):
    """The user of a live sign-in session, by the key in the cookie; None otherwise."""
    row = _find(key, UserSession.LOGIN)
    if row is None:
        return None
    user = row.user
    user.session_key = key
    now = utcnow()
    if now - row.last_seen_at >= TOUCH_INTERVAL:
        lifetime = current_app.config[
            'REMEMBER_ME_LIFETIME' if row.remember else 'SESSION_LIFETIME'
        ]
        row.last_seen_at = now
        row.expires_at = now + timedelta(seconds=lifetime)
        row.ip_address = (request.remote_addr or '')[:45] or None
        user.last_seen = now
        db.session.commit()
        # Sent again, and so signed under the current key, at least once a minute of use.
        session.modified = True
    return user


def begin_reset(user, state, expires_at):
    """Keep on the server that this browser is resetting the password of ``user``.

    Only the link's state fingerprint is kept, never the token: the row lets this
    browser, and no other, set a password while that state is still the user's.
    """
    end_reset()
    key, _ = _new_row(
        user,
        UserSession.RESET,
        expires_at - utcnow(),
        reset_state=state,
    )
    db.session.commit()
    session[RESET_KEY] = key


def reset_in_progress():
    """The user whose password this browser is resetting, if that link is still valid."""
    row = _find(session.get(RESET_KEY), UserSession.RESET)
    if row is None or not row.user.has_reset_state(row.reset_state):
        return None
    return row.user


def end_reset():
    """Forget the reset in progress in this browser (on the server too)."""
    key = session.pop(RESET_KEY, None)
    if isinstance(key, str):
        db.session.execute(
            sa.delete(UserSession)
            .where(UserSession.key_hash == _hash(key))
            .execution_options(synchronize_session=False)
        )
        db.session.commit()


UNKNOWN_DEVICE = 'Unknown device'


def device_label(device):
    """A stored device description ("Firefox on Windows") in the reader's language."""
    if not device or device == UNKNOWN_DEVICE:
        return gettext('Unknown device')
    browser, on, system = device.rpartition(' on ')
    if on:
        return gettext('%(browser)s on %(system)s', browser=browser, system=system)
    return device


@lru_cache(maxsize=1024)
def describe_device(user_agent):
    """ "Firefox on Windows", from a User-Agent header; "Unknown device" when it says nothing."""
    from ua_parser import parse

    parsed = parse(user_agent[:1000]) if user_agent else None
    browser = parsed.user_agent.family if parsed and parsed.user_agent else None
    system = parsed.os.family if parsed and parsed.os else None
    if browser and system and system != 'Other':
        return f'{browser} on {system}'[:120]
    return (browser or system or UNKNOWN_DEVICE)[:120]


class RotatingSessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie session, sent again under the current key when an old key opened it.

    Flask accepts a cookie signed with a key in SECRET_KEY_FALLBACKS but signs it again
    only when the session changes; this marks such a session changed, so every browser
    that comes back during a rotation carries on under the new key.
    """

    def open_session(self, app, request):
        session = super().open_session(app, request)
        value = request.cookies.get(self.get_cookie_name(app))
        if session is not None and value and app.config.get('SECRET_KEY_FALLBACKS'):
            current_key_only = URLSafeTimedSerializer(
                app.secret_key,
                salt=self.salt,
                serializer=self.serializer,
                signer_kwargs={
                    'key_derivation': self.key_derivation,
                    'digest_method': self.digest_method,
                },
            )
            try:
                current_key_only.loads(value)
            except BadSignature:
                session.modified = True
        return session
