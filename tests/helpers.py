"""What tests share besides fixtures: settings, the test password, and small helpers.

Tests import from here; ``conftest.py`` holds only the fixtures.
"""

import os
import re
import threading
from collections import UserList
from contextlib import contextmanager
from itertools import count
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa

from config import Config

# pytest-xdist's worker name (gw0, gw1, ...); unset when the suite runs in one process.
XDIST_WORKER = os.environ.get('PYTEST_XDIST_WORKER', '')


def worker_database_url(url, worker=XDIST_WORKER):
    """The PostgreSQL database of this test worker: the tests drop its schema, so each has one."""
    if not url or not worker:
        return url
    parsed = sa.engine.make_url(url)
    return parsed.set(database=f'{parsed.database}_{worker}').render_as_string(hide_password=False)


def worker_redis_url(url, worker=XDIST_WORKER):
    """The Redis database of this test worker (the given one, then the ones below it)."""
    if not url or not worker:
        return url
    parsed = urlsplit(url)
    base = int(parsed.path.strip('/') or 0)
    number = base - int(worker.removeprefix('gw'))
    if number < 1:
        raise ValueError(
            f'TEST_REDIS_URL names Redis database {base}: too low for worker {worker}, '
            'which takes the ones below it (0 stays the default of REDIS_URL)'
        )
    return urlunsplit(parsed._replace(path=f'/{number}'))


TEST_DATABASE_URL = worker_database_url(os.environ.get('TEST_DATABASE_URL'))
TEST_REDIS_URL = worker_redis_url(os.environ.get('TEST_REDIS_URL'))
PASSWORD = 'correct-horse-battery-staple'

# Debian's Chromium, started as the browser tests and screenshots need it.
CHROMIUM = '/usr/bin/chromium'
CHROMIUM_FLAGS = [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--no-first-run',
]

DATABASES = ['sqlite'] + (['postgresql'] if TEST_DATABASE_URL else [])


class TestConfig(Config):
    TESTING = True
    SECRET_KEY = 'test-secret-key-that-is-at-least-32-bytes-long'
    SECRET_KEY_FALLBACKS = []
    SERVER_NAME = 'microblog.example.com'
    PREFERRED_URL_SCHEME = 'https'
    TRUSTED_HOSTS = None
    WTF_CSRF_ENABLED = False
    RATELIMIT_ENABLED = False
    RATELIMIT_STORAGE_URI = 'memory://'
    SESSION_COOKIE_SECURE = False
    REMEMBER_COOKIE_SECURE = False
    MAIL_SERVER = 'localhost'
    MAIL_PORT = 25
    MAIL_USE_TLS = False
    MAIL_USE_SSL = False
    MAIL_USERNAME = None
    MAIL_PASSWORD = None
    MAIL_DEFAULT_SENDER = 'no-reply@example.com'
    MAIL_QUEUE = 'thread'
    MAIL_TIMEOUT = 5
    MAIL_RETRY_BACKOFF = 30
    MAIL_POLL_INTERVAL = 60
    ADMINS = ['admin@example.com']
    POSTS_PER_PAGE = 25
    RESET_PASSWORD_TOKEN_TTL = 600
    # A cheap hash: the suite hashes hundreds of passwords. Tests about hashing and
    # timing set 'scrypt', the production default, themselves.
    PASSWORD_HASH_METHOD = 'pbkdf2:sha256:1'


class AuthActions:
    def __init__(self, client):
        self._client = client

    def login(self, username='susan', password=PASSWORD, remember_me=False, **kwargs):
        data = {'username': username, 'password': password}
        if remember_me:
            data['remember_me'] = 'y'
        return self._client.post('/login', data=data, **kwargs)

    def logout(self):
        return self._client.post('/logout')


class Outbox(UserList):
    """What Flask-Mail dispatched (its record_messages list), sent by the delivery worker."""

    def __init__(self, app, recorded):
        super().__init__()
        self.data = recorded
        self.app = app

    def wait(self):
        """Let the delivery worker finish a whole pass, then return what was sent."""
        self.app.extensions['mail_delivery'].flush()
        return self


def sign_in_as(client, user, remember=False):
    """Sign the test client in as ``user`` without a password: a real session on the server."""
    from app.auth.sessions import sign_in

    with client.application.test_request_context():
        sign_in(user, remember=remember)
        key = user.get_id()
    with client.session_transaction() as session:
        session['_user_id'] = key
        session['_fresh'] = True
        session.permanent = remember
    return client


def links_in(text):
    """Every http(s) URL in a text."""
    return re.findall(r'https?://[^\s"<>]+', text)


def waiting_change(user, new='new@example.com'):
    """A change of ``user``'s confirmed address to ``new``, waiting for its link, committed."""
    from app import db
    from app.models import EmailChange

    change = EmailChange(
        user_id=user.id,
        old_email=user.email,
        old_email_key=user.email_key,
        old_confirmed=True,
        new_email=new,
        status=EmailChange.PENDING,
    )
    db.session.add(change)
    db.session.commit()
    return change


@contextmanager
def first_writes_meet(app, pattern, parties=2):
    """Hold the first ``parties`` statements matching ``pattern`` until all of them have come.

    Each request has then made up its mind (passed the form's checks, looked at the
    followers table) before any of them writes.
    """
    barrier = threading.Barrier(parties)
    arrivals = count()

    def hold(conn, cursor, statement, parameters, context, executemany):
        if re.search(pattern, statement) and next(arrivals) < parties:
            barrier.wait(20)

    from app import db

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, 'before_cursor_execute', hold)
    try:
        yield
    finally:
        sa.event.remove(engine, 'before_cursor_execute', hold)
    assert next(arrivals) >= parties, 'the writes never met: the race was not made'


def at_once(*calls):
    """Run the calls on threads of their own; their results, or the first exception raised."""
    results = [None] * len(calls)
    errors = []

    def run(number, call):
        try:
            results[number] = call()
        except Exception as exc:  # noqa: BLE001 - handed back to the test below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=item) for item in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()
    if errors:
        raise errors[0]
    return results


@contextmanager
def recorded_statements(app):
    """The SQL statements this thread runs inside the block, white space folded (the
    delivery worker's own polls in its thread are not the page's)."""
    from app import db

    statements = []
    thread = threading.get_ident()

    def record(conn, cursor, statement, parameters, context, executemany):
        if threading.get_ident() == thread:
            statements.append(' '.join(statement.split()))

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, 'before_cursor_execute', record)
    try:
        yield statements
    finally:
        sa.event.remove(engine, 'before_cursor_execute', record)


def add_test_views(app, *views):
    """Serve each view at /_test/<its name>, for GET and POST."""
    for view in views:
        app.add_url_rule(f'/_test/{view.__name__}', view_func=view, methods=['GET', 'POST'])
