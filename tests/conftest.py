"""Fixtures shared by the whole suite.

Every test that uses ``app`` runs on SQLite, and again on PostgreSQL when
TEST_DATABASE_URL is set (CI sets it); a test marked ``sqlite_only``, whose outcome
does not depend on the database, runs on SQLite alone.
"""

import os

import flask
import pytest
import sqlalchemy as sa

from app import create_app, db, mailer
from app.main.routes import BY_AUTHOR, EVERYONE, HOME
from app.models import User
from tests.helpers import (
    DATABASES,
    PASSWORD,
    TEST_DATABASE_URL,
    TEST_REDIS_URL,
    AuthActions,
    Outbox,
    TestConfig,
)
from tests.tls import make_certificate


def _reset_postgres(url):
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text('DROP SCHEMA public CASCADE'))
        connection.execute(sa.text('CREATE SCHEMA public'))
    engine.dispose()


def pytest_sessionstart(session):
    """Create this test worker's own PostgreSQL database, next to TEST_DATABASE_URL's."""
    given = os.environ.get('TEST_DATABASE_URL')
    if not given or TEST_DATABASE_URL == given:
        return
    name = sa.engine.make_url(TEST_DATABASE_URL).database
    engine = sa.create_engine(given, isolation_level='AUTOCOMMIT')
    with engine.connect() as connection:
        exists = connection.scalar(
            sa.text('SELECT 1 FROM pg_database WHERE datname = :name'), {'name': name}
        )
        if not exists:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()


# Files whose tests start servers of their own (Chromium, gunicorn, `make run`, the
# README's deployments): collected first, so that the test workers begin with them
# instead of ending on them while the other worker idles.
SLOWEST_FIRST = ('tests/browser/', 'tests/test_readme.py', 'tests/test_make_run.py')


def pytest_collection_modifyitems(config, items):
    """Put the slowest files first (`make test` hands files out in this order)."""
    items.sort(key=lambda item: not item.nodeid.startswith(SLOWEST_FIRST))


def pytest_generate_tests(metafunc):
    """Run each test that needs a database on every database, or on SQLite if marked so."""
    if 'database_url' in metafunc.fixturenames:
        one = metafunc.definition.get_closest_marker('sqlite_only') is not None
        metafunc.parametrize('database_url', DATABASES[:1] if one else DATABASES, indirect=True)


@pytest.fixture
def database_url(request, tmp_path):
    """A fresh, empty database: a SQLite file, or the PostgreSQL test database."""
    if request.param == 'sqlite':
        return 'sqlite:///' + str(tmp_path / 'test.db')
    _reset_postgres(TEST_DATABASE_URL)
    return TEST_DATABASE_URL


@pytest.fixture
def make_app(database_url):
    """Build apps on the test database with settings overridden per test."""
    apps = []

    def factory(create_tables=True, **overrides):
        overrides.setdefault('SQLALCHEMY_DATABASE_URI', database_url)
        config_class = type('CustomTestConfig', (TestConfig,), overrides)
        app = create_app(config_class)
        apps.append(app)
        if create_tables:
            with app.app_context():
                db.create_all()
        return app

    yield factory
    for app in apps:
        app.extensions['mail_delivery'].stop()
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.fixture(autouse=True)
def cold_listings(monkeypatch):
    """Each test builds the page listings' statements afresh, as a new process does."""
    # Built once per process and kept, they would otherwise be built by whichever test
    # came first, and the code that builds them run by no other.
    for listing in (EVERYONE, BY_AUTHOR, HOME):
        monkeypatch.setattr(listing, '_statements', {})


def forget_previous_request(sender, **extra):
    """Empty ``g`` as a new request starts, as a fresh app context would in production.

    The ``app`` fixture keeps one app context pushed, and Flask reuses it for every
    request, so one client's login would otherwise leak into the next client's request.
    """
    for name in list(flask.g):
        flask.g.pop(name)


@pytest.fixture
def app(make_app):
    """The application under test, on a fresh database, each request seeing only its own login."""
    app = make_app()
    flask.request_started.connect(forget_previous_request, app)
    with app.app_context():
        yield app
    flask.request_started.disconnect(forget_previous_request, app)


@pytest.fixture
def client(app):
    """A test client for the app."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """A runner for the app's Click commands."""
    return app.test_cli_runner()


@pytest.fixture
def make_user(app):
    """Create and commit a user with a known password."""

    def factory(username='susan', email=None, password=PASSWORD):
        user = User(username=username, email=email or f'{username}@example.com')
        user.set_password(password)
        db.session.add(user)
        db.session.commit()
        return user

    return factory


@pytest.fixture
def auth(client):
    """Log the test client in and out."""
    return AuthActions(client)


@pytest.fixture
def outbox(app):
    """Messages sent by the app during the test; call ``outbox.wait()`` first."""
    with mailer.record_messages() as recorded:
        yield Outbox(app, recorded)


@pytest.fixture(scope='session')
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (made with openssl), for TLS mail servers."""
    made = make_certificate(tmp_path_factory.mktemp('tls'))
    if made is None:
        pytest.skip('openssl is not installed: no certificate for the TLS tests')
    return made


@pytest.fixture
def trusted_certificate(certificate, monkeypatch):
    """The test certificate, trusted by this process's TLS clients (as a real CA's would be)."""
    monkeypatch.setenv('SSL_CERT_FILE', str(certificate.cert))
    return certificate


def pytest_report_header(config):
    """Say which optional servers this run uses, and how to add the others."""
    lines = [
        'PostgreSQL: '
        + (TEST_DATABASE_URL or 'not used (set TEST_DATABASE_URL to run every test on it too)'),
        'Redis: '
        + (TEST_REDIS_URL or 'not used (set TEST_REDIS_URL to run the RQ and limit tests)'),
    ]
    if config.getoption('numprocesses', None) and (TEST_DATABASE_URL or TEST_REDIS_URL):
        lines.append(
            'Each test worker gwN: the PostgreSQL database <name>_gwN, Redis database (given - N)'
        )
    return lines
