"""Settings the benchmarks count queries with: an app in testing mode, no mail sent, no limits."""

from config import Config


class CountingConfig(Config):
    TESTING = True
    SECRET_KEY = 'bench-secret-key-that-is-at-least-32-bytes-long'
    SECRET_KEY_FALLBACKS = []
    SERVER_NAME = 'microblog.example.com'
    PREFERRED_URL_SCHEME = 'https'
    TRUSTED_HOSTS = None
    WTF_CSRF_ENABLED = False
    RATELIMIT_ENABLED = False
    RATELIMIT_STORAGE_URI = 'memory://'
    SESSION_COOKIE_SECURE = False
    MAIL_QUEUE = 'none'
    MAIL_DEFAULT_SENDER = 'no-reply@example.com'
    ADMINS = ['admin@example.com']
