"""Settings for Microblog, every one read from the environment with a safe default."""

import os

from dotenv import load_dotenv

basedir = os.path.abspath(os.path.dirname(__file__))
load_dotenv(os.path.join(basedir, '.env'))

DEV_SECRET_KEY = 'dev-only-secret-key-change-me-0123456789abcdef'


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
    raise ValueError(
        f'{name}={value!r} is not a boolean: use one of 1/0, true/false, yes/no, on/off'
    )


def env_int(name, default):
    """Read an integer setting, with a message that names the setting when it is not one."""
    value = os.environ.get(name)
    if value is None or value.strip() == '':
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f'{name}={value!r} is not a whole number') from None


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
    SECRET_KEY = os.environ.get('SECRET_KEY') or DEV_SECRET_KEY
    # Old keys still accepted for sessions and reset links while a new key rolls out.
    SECRET_KEY_FALLBACKS = env_list('SECRET_KEY_FALLBACKS')

    # The public address of the site: links in emails are built from it, never
    # from the Host header of a request.
    SERVER_NAME = os.environ.get('SERVER_NAME') or None
    # None means https, or http when the app runs in debug mode; create_app decides.
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

    # 'local': pictures the app draws from a keyed hash of the account id (nothing leaves
    # the site); 'gravatar': Gravatar's, by a hash of each email address.
    AVATARS = (os.environ.get('AVATARS') or 'local').strip().lower()

    RATELIMIT_ENABLED = env_bool('RATELIMIT_ENABLED', True)
    RATELIMIT_STORAGE_URI = os.environ.get('RATELIMIT_STORAGE_URI') or 'memory://'
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

    RATELIMIT_REGISTER_PER_ADDRESS = (
        os.environ.get('RATELIMIT_REGISTER_PER_ADDRESS') or '20 per hour'
    )

    # None means "secure unless the app runs in debug mode"; create_app decides.
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
