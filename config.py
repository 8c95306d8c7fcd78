"""Settings for Microblog, every one read from the environment with a safe default.

``Config`` reads them; ``check_settings`` fills in the defaults that depend on how the
app runs (debug or not) and refuses, in one line, settings it must not start with.
"""

import hashlib
import ipaddress
import os
from urllib.parse import urlsplit

from dotenv import load_dotenv

basedir = os.path.abspath(os.path.dirname(__file__))


class ConfigError(SystemExit):
    """A setting Microblog refuses to start with; the message says what to set.

    A SystemExit, so that `flask` commands and gunicorn stop with this one line
    instead of a traceback, wherever the setting is read: here at import, or in
    ``create_app``. Nothing catches it on the way out (it is no ``Exception``).
    """

    def __init__(self, message):
        super().__init__(f'Microblog cannot start: {message}')
        self.message = message


load_dotenv(os.path.join(basedir, '.env'))

# Public, so never a secret: used only in debug mode on this machine (see check_settings).
DEV_SECRET_KEY = 'dev-only-secret-key-change-me-0123456789abcdef'
MIN_SECRET_KEY_BYTES = 32
MAKE_A_KEY = 'python -c "import secrets; print(secrets.token_hex(32))"'
DEVELOPMENT_SERVER_NAME = '127.0.0.1:5000'


def env_bool(name, default=False):
    """Read a boolean setting strictly: only well-known words count, anything else is an error."""
    value = os.environ.get(name)
    if value is None or value.strip() == '':
        return default
    word = value.strip().lower()
    if word in ('1', 'true', 'yes', 'on'):
        return True
    if word in ('0', 'false', 'no', 'off'):
        return False
    raise ConfigError(
        f'{name}={value!r} is not a boolean: use one of 1/0, true/false, yes/no, on/off.'
    )


def env_int(name, default):
    """Read an integer setting, with a message that names the setting when it is not one."""
    value = os.environ.get(name)
    if value is None or value.strip() == '':
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f'{name}={value!r} is not a whole number.') from None


def env_list(name):
    """Read a comma-separated setting as a list, ignoring blanks."""
    return [item.strip() for item in os.environ.get(name, '').split(',') if item.strip()]


def limit_storage_warning(config, processes):
    """What to log when rate limits would be counted by each of ``processes`` on its own.

    With memory:// every process keeps its own counts, so each limit is that many times
    higher than set. None when the limits are counted once for the site (or are off).
    """
    storage = config.RATELIMIT_STORAGE_URI
    if processes < 2 or not config.RATELIMIT_ENABLED or not storage.startswith('memory:'):
        return None
    return (
        f'Rate limits are counted in each of the {processes} worker processes on its own '
        f'(RATELIMIT_STORAGE_URI={storage}), so every limit is {processes} times higher than '
        'set. Set RATELIMIT_STORAGE_URI=redis://127.0.0.1:6379/1 (a Redis server) to count '
        'them once for the site, or run one worker process with more threads.'
    )


def sqlite_url(name):
    """The URL of a SQLite file beside this module."""
    return 'sqlite:///' + os.path.join(basedir, name)


class Config:
    # None: the development key in debug mode on this machine, refused otherwise.
    SECRET_KEY = os.environ.get('SECRET_KEY') or None
    # Old keys still accepted for sessions and reset links while a new key rolls out.
    SECRET_KEY_FALLBACKS = env_list('SECRET_KEY_FALLBACKS')

    # The public address of the site: links in emails are built from it, never
    # from the Host header of a request.
    SERVER_NAME = os.environ.get('SERVER_NAME') or None
    # None means http when SERVER_NAME is this machine (127.0.0.1, localhost), else https.
    PREFERRED_URL_SCHEME = os.environ.get('PREFERRED_URL_SCHEME') or None
    TRUSTED_HOSTS = env_list('TRUSTED_HOSTS') or None
    # How many proxies (nginx, a load balancer) stand in front of the app: their
    # X-Forwarded-For and -Proto are then believed, so that rate limits count
    # real client addresses. X-Forwarded-Host is never believed.
    PROXY_COUNT = env_int('PROXY_COUNT', 0)

    # On by default; switched off only for load tests that cannot fetch a form first.
    WTF_CSRF_ENABLED = env_bool('WTF_CSRF_ENABLED', True)
    # Larger requests get a clean 413 page.
    MAX_CONTENT_LENGTH = env_int('MAX_CONTENT_LENGTH', 1024 * 1024)

    SQLALCHEMY_DATABASE_URI = os.environ.get('DATABASE_URL') or sqlite_url('app.db')
    POSTS_PER_PAGE = env_int('POSTS_PER_PAGE', 25)
    LOG_TO_STDOUT = env_bool('LOG_TO_STDOUT')
    ADMINS = env_list('ADMINS') or ['admin@example.com']
    # Each kind of error is emailed to ADMINS at most once in this many seconds (per process).
    ERROR_MAIL_INTERVAL = env_int('ERROR_MAIL_INTERVAL', 3600)

    MAIL_SERVER = os.environ.get('MAIL_SERVER') or None
    MAIL_PORT = env_int('MAIL_PORT', 25)
    MAIL_USE_TLS = env_bool('MAIL_USE_TLS')
    MAIL_USE_SSL = env_bool('MAIL_USE_SSL')
    MAIL_USERNAME = os.environ.get('MAIL_USERNAME') or None
    MAIL_PASSWORD = os.environ.get('MAIL_PASSWORD') or None
    MAIL_DEFAULT_SENDER = os.environ.get('MAIL_DEFAULT_SENDER') or None
    MAIL_TIMEOUT = env_int('MAIL_TIMEOUT', 10)
    # Print the SMTP conversation of every delivery (Flask-Mail would follow debug mode).
    MAIL_DEBUG = env_bool('MAIL_DEBUG')

    # Delivery: 'thread' (in-process worker), 'rq' (Redis workers) or 'none'
    # (stored only; `flask mail send-pending` from cron delivers).
    MAIL_QUEUE = os.environ.get('MAIL_QUEUE') or 'thread'
    REDIS_URL = os.environ.get('REDIS_URL') or 'redis://127.0.0.1:6379/0'
    MAIL_RQ_QUEUE = os.environ.get('MAIL_RQ_QUEUE') or 'microblog-mail'
    MAIL_MAX_ATTEMPTS = env_int('MAIL_MAX_ATTEMPTS', 10)
    MAIL_RETRY_BACKOFF = env_int('MAIL_RETRY_BACKOFF', 30)
    MAIL_RETRY_BACKOFF_MAX = env_int('MAIL_RETRY_BACKOFF_MAX', 3600)
    # SMTP connections a delivery pass uses at once, so that a slow server does not
    # make every message wait for the one before it.
    MAIL_CONNECTIONS = env_int('MAIL_CONNECTIONS', 5)
    # Messages one sender claims at a time.
    MAIL_BATCH_SIZE = env_int('MAIL_BATCH_SIZE', 10)
    MAIL_CLAIM_TIMEOUT = env_int('MAIL_CLAIM_TIMEOUT', 300)
    # The delivery worker's cadence, in seconds: it looks for due messages this often
    # even when nobody wakes it. Reset requests wait for it (they never wake the worker,
    # so that the work they cause cannot be tied to the request).
    MAIL_POLL_INTERVAL = env_int('MAIL_POLL_INTERVAL', 3)
    # A request for an email with a link (a reset) that could not be sent for this
    # long is dropped, with a log line, rather than delivered a day late.
    MAIL_LINK_MAX_AGE = env_int('MAIL_LINK_MAX_AGE', 86400)

    RESET_PASSWORD_TOKEN_TTL = env_int('RESET_PASSWORD_TOKEN_TTL', 600)

    # Seconds a link confirming an address (after registering, or a new one) stays valid.
    CONFIRM_EMAIL_TOKEN_TTL = env_int('CONFIRM_EMAIL_TOKEN_TTL', 3 * 86400)
    # Seconds the old address's link can cancel a change of address, or undo it once made.
    EMAIL_CHANGE_UNDO_LIFETIME = env_int('EMAIL_CHANGE_UNDO_LIFETIME', 7 * 86400)
    # Whether an account whose address is not confirmed yet may post (it may use the
    # rest of the site either way).
    UNCONFIRMED_CAN_POST = env_bool('UNCONFIRMED_CAN_POST', True)

    # How passwords are hashed, as Werkzeug names it ('scrypt', 'scrypt:32768:8:1',
    # 'pbkdf2:sha256:1000000'). Hashes made by another method still check, so changing it
    # applies to each password as it is next set.
    PASSWORD_HASH_METHOD = os.environ.get('PASSWORD_HASH_METHOD') or 'scrypt'

    # 'local': pictures the app draws from a keyed hash of the account id (nothing leaves
    # the site); 'gravatar': Gravatar's, by a hash of each email address.
    AVATARS = (os.environ.get('AVATARS') or 'local').strip().lower()

    RATELIMIT_ENABLED = env_bool('RATELIMIT_ENABLED', True)
    RATELIMIT_STORAGE_URI = os.environ.get('RATELIMIT_STORAGE_URI') or 'memory://'
    # When that storage (Redis) is unreachable, Flask-Limiter counts in this process's
    # memory instead, says so in the log, and goes back to it once it answers again.
    RATELIMIT_IN_MEMORY_FALLBACK_ENABLED = env_bool('RATELIMIT_IN_MEMORY_FALLBACK_ENABLED', True)
    # A Redis that hangs fails fast (and falls back) instead of holding up the page;
    # its errors arrive as limits' StorageError.
    RATELIMIT_STORAGE_OPTIONS = {
        'socket_connect_timeout': 2,
        'socket_timeout': 2,
        'wrap_exceptions': True,
    }
    RATELIMIT_RESET_PER_ADDRESS = os.environ.get('RATELIMIT_RESET_PER_ADDRESS') or '10 per hour'
    # Reset emails to one address asked for from one client address: a stranger asking
    # elsewhere never uses up the owner's (app.ratelimits).
    RATELIMIT_RESET_PER_ADDRESS_AND_EMAIL = (
        os.environ.get('RATELIMIT_RESET_PER_ADDRESS_AND_EMAIL') or '3 per hour'
    )
    RATELIMIT_LOGIN_PER_ADDRESS = (
        os.environ.get('RATELIMIT_LOGIN_PER_ADDRESS') or '20 per minute;200 per hour'
    )
    # Failed logins against one username from one client address, then a 429 page.
    RATELIMIT_LOGIN_PER_ADDRESS_AND_USERNAME = (
        os.environ.get('RATELIMIT_LOGIN_PER_ADDRESS_AND_USERNAME') or '5 per minute;20 per hour'
    )
    # Failed logins against one username from every address together; past it, only
    # browsers the account has signed in from may try (app.ratelimits). Keep it above
    # the per-address limit, so that one address alone can never reach it.
    RATELIMIT_LOGIN_PER_USERNAME = (
        os.environ.get('RATELIMIT_LOGIN_PER_USERNAME') or '20 per minute;100 per hour'
    )

    # Confirmation links sent again, per account.
    RATELIMIT_CONFIRM_RESEND = os.environ.get('RATELIMIT_CONFIRM_RESEND') or '3 per hour'
    # Attempts to change the password or the address (each asks for the current
    # password), per account: a stolen session cannot guess the password there.
    RATELIMIT_ACCOUNT_CHANGES = (
        os.environ.get('RATELIMIT_ACCOUNT_CHANGES') or '5 per minute;20 per hour'
    )
    RATELIMIT_REGISTER_PER_ADDRESS = (
        os.environ.get('RATELIMIT_REGISTER_PER_ADDRESS') or '20 per hour'
    )

    # None means "secure when the site is served over https" (PREFERRED_URL_SCHEME).
    SESSION_COOKIE_SECURE = (
        env_bool('SESSION_COOKIE_SECURE') if os.environ.get('SESSION_COOKIE_SECURE') else None
    )
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = 'Lax'
    # Sessions live on the server (auth/sessions.py). Without "remember me" one ends
    # after this many seconds unused (and its cookie when the browser closes) ...
    SESSION_LIFETIME = env_int('SESSION_LIFETIME', 24 * 3600)
    # ... with it, after this many seconds unused.
    REMEMBER_ME_LIFETIME = env_int('REMEMBER_ME_LIFETIME', 30 * 24 * 3600)
    # Error tracebacks and logs never carry SQL parameters (password hashes, addresses).
    SQLALCHEMY_ENGINE_OPTIONS = {'hide_parameters': True}


def settings_of(config_class):
    """The settings of a config class as a dict, as ``app.config.from_object`` reads them."""
    return {name: getattr(config_class, name) for name in dir(config_class) if name.isupper()}


def is_this_machine(server_name):
    """Whether SERVER_NAME names this machine (127.0.0.1, ::1, localhost): development."""
    host = urlsplit(f'//{server_name}').hostname or ''
    if host == 'localhost' or host.endswith('.localhost'):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_hash_method(method):
    """Refuse a PASSWORD_HASH_METHOD Werkzeug would refuse at the first sign-up, without hashing."""
    name, *numbers = str(method).split(':')
    known = {'scrypt': 3, 'pbkdf2': 2}
    if name == 'pbkdf2' and numbers:
        digest, *numbers = numbers
        if digest not in hashlib.algorithms_available:
            numbers = ['bad']
    if (
        name not in known
        or len(numbers) > known[name] - (name == 'pbkdf2')
        or not all(n.isdigit() and int(n) > 0 for n in numbers)
    ):
        raise ConfigError(
            f'PASSWORD_HASH_METHOD={method!r} is not a method Werkzeug knows. Use scrypt '
            '(the default), scrypt:N:r:p, or pbkdf2:sha256:ITERATIONS.'
        )


def check_settings(config, debug):
    """Fill in the defaults that depend on how the app runs; refuse settings it must not run with.

    The development defaults (the public development key, SERVER_NAME 127.0.0.1:5000,
    http) apply only in debug mode, and only while nothing of a deployment is set: no
    SECRET_KEY of its own and no SERVER_NAME off this machine. On a deployed machine
    `.flaskenv` turns debug on for `flask` commands too (cron's `send-pending`, `db
    upgrade`), and its SECRET_KEY or SERVER_NAME then makes them refuse what is missing,
    so a link in an email is never built from a development host, scheme or key.
    """
    if config['MAIL_USE_TLS'] and config['MAIL_USE_SSL']:
        raise ConfigError(
            'MAIL_USE_TLS and MAIL_USE_SSL are both on. Use one: MAIL_USE_TLS=true with '
            'port 587 (STARTTLS), or MAIL_USE_SSL=true with port 465 (TLS from the start).'
        )
    if config['MAIL_QUEUE'] not in ('thread', 'rq', 'none'):
        raise ConfigError(f'MAIL_QUEUE={config["MAIL_QUEUE"]!r}: use thread, rq or none.')
    if config.get('MAIL_DEFAULT_SENDER') is None:
        config['MAIL_DEFAULT_SENDER'] = config['ADMINS'][0]
    _check_hash_method(config['PASSWORD_HASH_METHOD'])

    key = config.get('SECRET_KEY') or None
    server_name = config.get('SERVER_NAME') or None
    own_key = key is not None and key != DEV_SECRET_KEY
    if debug and not own_key and (server_name is None or is_this_machine(server_name)):
        config['SECRET_KEY'] = DEV_SECRET_KEY
        config['SERVER_NAME'] = server_name or DEVELOPMENT_SERVER_NAME
    else:
        _check_secret_keys(key, config.get('SECRET_KEY_FALLBACKS') or [])
        if server_name is None:
            raise ConfigError(
                'SERVER_NAME is not set. Set it to the public host name of the site (for '
                'example SERVER_NAME=microblog.example.com): links in emails are built from it.'
            )

    if not config.get('PREFERRED_URL_SCHEME'):
        config['PREFERRED_URL_SCHEME'] = (
            'http' if is_this_machine(config['SERVER_NAME']) else 'https'
        )
    elif config['PREFERRED_URL_SCHEME'] not in ('http', 'https'):
        raise ConfigError(
            f'PREFERRED_URL_SCHEME={config["PREFERRED_URL_SCHEME"]!r}: use https, or http '
            'before HTTPS is set up.'
        )
    # Cookies follow the scheme the site is served on: Secure over https, and plain
    # http (this machine, or PREFERRED_URL_SCHEME=http before HTTPS is set up) keeps
    # its forms working.
    if config.get('SESSION_COOKIE_SECURE') is None:
        config['SESSION_COOKIE_SECURE'] = config['PREFERRED_URL_SCHEME'] == 'https'
    if config.get('REMEMBER_COOKIE_SECURE') is None:
        config['REMEMBER_COOKIE_SECURE'] = config['SESSION_COOKIE_SECURE']
    return config


def _check_secret_keys(key, fallbacks):
    make_one = f'Make one with {MAKE_A_KEY} and set SECRET_KEY=<it> in .env or the environment.'
    if key is None:
        raise ConfigError(f'SECRET_KEY is not set. {make_one}')
    if key == DEV_SECRET_KEY:
        raise ConfigError(f'SECRET_KEY is the public development key. {make_one}')
    if len(key.encode()) < MIN_SECRET_KEY_BYTES:
        raise ConfigError(
            f'SECRET_KEY is {len(key.encode())} bytes long; it needs at least '
            f'{MIN_SECRET_KEY_BYTES}. {make_one}'
        )
    if DEV_SECRET_KEY in fallbacks:
        raise ConfigError(
            'SECRET_KEY_FALLBACKS holds the public development key: remove it, or anyone '
            'could sign sessions and reset links.'
        )
