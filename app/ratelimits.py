"""Rate limits that slow an attacker down and never lock the owner of an account out.

Logins
    Each attempt is counted *before* its password is checked, by an atomic increment in
    the limiter's storage (Flask-Limiter's: memory or Redis), so that 40 guesses sent at
    once get at most the limit checked; a successful login takes its counts back, so
    what stays counted is the failures (and the refusals). Whether an attempt failed is
    what the view found, never the status code of its answer.

    - From one client address, attempts against one username have a hard limit,
      RATELIMIT_LOGIN_PER_ADDRESS_AND_USERNAME; past it, a 429 page. A stranger at one
      address slows only themselves.
    - Across every address, a username has a higher ceiling, RATELIMIT_LOGIN_PER_USERNAME,
      against guesses spread over many addresses. Past it the password is only checked
      from a browser that holds a *device cookie* for that account, which a successful
      login or a completed password reset gives (OWASP's device-cookie scheme, from its
      "Slow brute force" guidance). So guessing stops, but the owner does not: they sign
      in from a browser they have used before, or reset the password by email, which a
      stranger cannot stop either (see below), and that browser can then sign in. A
      device cookie's own failures are counted with the per-address limit, so a stolen
      one is worth no more than an address, and its holder is exempt from the plain
      per-address limit for that account only (a stranger behind the same NAT cannot
      lock the owner out that way).

    Growing delays were the other way to slow an attacker, and were left aside: under
    gunicorn's sync or threaded workers a delay holds a worker for its whole length, so
    the attacker who causes the delays would also tie up the site. Answering "not now"
    at once costs nothing.

    A username is counted whatever its case or the spaces around it, and an unknown one
    exactly like a known one, so that no answer tells whether an account exists.

Reset emails
    Counted per (client address, address typed), silently: past the limit the page says
    what it always says and nothing is sent. A stranger asking for the owner's address
    uses up their own allowance, never the owner's. (The per-address limit on reset
    requests, a 429 page, is Flask-Limiter's decorator on the view.)
"""

import hashlib
import secrets

from flask import after_this_request, current_app, render_template, request, url_for
from flask_babel import gettext
from flask_limiter.util import get_remote_address
from itsdangerous import BadData, URLSafeTimedSerializer
from limits import parse_many
from limits.errors import StorageError
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter
from redis.exceptions import RedisError

from app import limiter
from app.addresses import lookup_key

DEVICE_COOKIE = 'login_device'
DEVICE_COOKIE_MAX_AGE = 365 * 24 * 3600
DEVICE_COOKIE_ACCOUNTS = 5  # accounts one browser is remembered for (a shared computer)


def _key(*parts):
    """A fixed-length key for the storage, which says nothing of what it counts."""
    return hashlib.sha256('\x1f'.join(parts).encode()).hexdigest()


def login_name_key(username):
    """What a typed username is counted as: its case and the spaces around it do not matter."""
    return username.strip().lower()[:64]


class Counters:
    """Fixed-window counts in the limiter's storage, taken before the work they guard.

    Each take is one atomic increment per limit, so concurrent requests can never all
    see room left; the counts taken can be given back when the work turns out to be a
    success. Fixed windows whatever RATELIMIT_STRATEGY says: they are the strategy
    that can give a count back.
    """

    def __init__(self):
        self.strategy = FixedWindowRateLimiter(limiter.storage)
        self.taken = []

    def _hit(self, item, namespace, key, cost=1):
        try:
            return self.strategy.hit(item, namespace, key, cost=cost)
        except (StorageError, RedisError, OSError) as exc:
            # The shared storage (Redis) stopped: count in this process until it is
            # back, as Flask-Limiter's own fallback does, rather than answer with a 500.
            current_app.logger.warning('Rate limit storage unavailable (%s): counting here', exc)
            self.strategy = FixedWindowRateLimiter(_FALLBACK_STORAGE)
            return self.strategy.hit(item, namespace, key, cost=cost)

    def take(self, setting, namespace, *parts):
        """Count one more; False when that goes past any of the limits in ``setting``."""
        key = _key(*parts)
        allowed = True
        for item in parse_many(current_app.config[setting]):
            self.taken.append((item, namespace, key))
            allowed = self._hit(item, namespace, key) and allowed
        return allowed

    def give_back(self):
        """Take back every count this object took."""
        for item, namespace, key in self.taken:
            self._hit(item, namespace, key, cost=-1)
        self.taken = []


_FALLBACK_STORAGE = MemoryStorage()


# Device cookies


def _device_serializer():
    config = current_app.config
    # itsdangerous signs with the last key and accepts any of them, as Flask's session does.
    keys = [*(config.get('SECRET_KEY_FALLBACKS') or []), config['SECRET_KEY']]
    return URLSafeTimedSerializer(keys, salt='microblog-login-device')


def _device_entries():
    """The (account id, name key, nonce) entries of this browser's valid device cookie."""
    value = request.cookies.get(DEVICE_COOKIE)
    if not value or len(value) > 4096:
        return []
    try:
        entries = _device_serializer().loads(value, max_age=DEVICE_COOKIE_MAX_AGE)
    except BadData:
        return []
    if not isinstance(entries, list):
        return []
    return [
        tuple(entry)
        for entry in entries
        if isinstance(entry, list)
        and len(entry) == 3
        and isinstance(entry[0], int)
        and all(isinstance(part, str) for part in entry[1:])
    ]


def _name_in_cookie(username):
    # Enough of a hash of the name to match the form's before the account is looked up.
    return _key('device-name', login_name_key(username))[:32]


def device_nonce_for(user):
    """The nonce of this browser's device cookie for ``user``, or None if it holds none."""
    if user is None:
        return None
    for user_id, _, nonce in _device_entries():
        if user_id == user.id:
            return nonce
    return None


def holds_device_cookie_for_typed_username():
    """Whether this browser has signed in before as the username in the form."""
    name = _name_in_cookie(request.form.get('username', ''))
    return any(entry_name == name for _, entry_name, _ in _device_entries())


def trust_this_browser(user):
    """Give this browser, with the response, a device cookie for ``user`` (kept a year).

    Called when the browser has shown it belongs to the owner: a login with the right
    password, or a password set from a reset link.
    """
    entries = [entry for entry in _device_entries() if entry[0] != user.id]
    entries.insert(0, (user.id, _name_in_cookie(user.username), secrets.token_urlsafe(16)))
    value = _device_serializer().dumps([list(entry) for entry in entries[:DEVICE_COOKIE_ACCOUNTS]])
    secure = bool(current_app.config['SESSION_COOKIE_SECURE'])
    path = url_for('auth.login')

    @after_this_request
    def set_device_cookie(response):
        response.set_cookie(
            DEVICE_COOKIE,
            value,
            max_age=DEVICE_COOKIE_MAX_AGE,
            path=path,  # only the login form needs it
            secure=secure,
            httponly=True,
            samesite='Strict',
        )
        return response


# Logins

TOO_MANY = 'too many'
UNKNOWN_BROWSER = 'unknown browser'


class LoginAttempt:
    """One login attempt, counted before its password is checked (see the module's notes).

    ``refused`` is None when the password may be checked; then call ``succeeded`` if it
    was right. Otherwise answer with ``refusal_page()``.
    """

    def __init__(self, username, user):
        self.refused = None
        self.counters = None
        if not limiter.enabled:
            return
        self.counters = Counters()
        name = login_name_key(username)
        nonce = device_nonce_for(user)
        if nonce and self.counters.take(
            'RATELIMIT_LOGIN_PER_ADDRESS_AND_USERNAME', 'login-device', nonce
        ):
            return
        if not self.counters.take(
            'RATELIMIT_LOGIN_PER_ADDRESS_AND_USERNAME', 'login-address', get_remote_address(), name
        ):
            self.refused = TOO_MANY
        elif not self.counters.take('RATELIMIT_LOGIN_PER_USERNAME', 'login-username', name):
            self.refused = UNKNOWN_BROWSER

    def succeeded(self, user):
        """The password was right: the attempt no longer counts, and this browser is known."""
        if self.counters is not None:
            self.counters.give_back()
        trust_this_browser(user)

    def refusal_page(self):
        """The 429 answer to a refused attempt: the same for every username, known or not."""
        template = 'errors/429.html' if self.refused == TOO_MANY else 'auth/login_refused.html'
        return render_template(template, title=gettext('Too Many Requests')), 429


# Reset emails


def reset_email_allowed(address):
    """Whether a reset email may go to ``address`` for this client address now (silent limit)."""
    if not limiter.enabled:
        return True
    return Counters().take(
        'RATELIMIT_RESET_PER_ADDRESS_AND_EMAIL',
        'reset-email',
        get_remote_address(),
        lookup_key(address) or address,
    )
