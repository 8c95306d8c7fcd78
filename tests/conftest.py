"""Fixtures shared by the whole suite.

Every test that uses ``app`` runs on SQLite, and again on PostgreSQL when
TEST_DATABASE_URL is set (CI sets it); a test marked ``sqlite_only``, whose outcome
does not depend on the database, runs on SQLite alone.
"""

import os
import shutil
import tempfile
import uuid
from pathlib import Path

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


# What the public schema holds, as one digest: tables, columns with their types, defaults
# and nullability, constraints, indexes, types, functions and triggers. Two databases
# with the same digest have the same tables, whatever their rows.
_SCHEMA_DIGEST = sa.text("""
SELECT md5(string_agg(item, ',' ORDER BY item)) FROM (
  SELECT c.relname || ':' || c.relkind::text || ':' || coalesce(a.attname || ':'
         || format_type(a.atttypid, a.atttypmod) || ':' || a.attnotnull::text || ':'
         || coalesce(pg_get_expr(d.adbin, d.adrelid), ''), '') AS item
    FROM pg_class c
    LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
   WHERE c.relnamespace = 'public'::regnamespace
  UNION ALL
  SELECT conname || ':' || pg_get_constraintdef(oid) FROM pg_constraint
   WHERE connamespace = 'public'::regnamespace
  UNION ALL
  SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
   WHERE c.relnamespace = 'public'::regnamespace
  UNION ALL
  SELECT 'type:' || typname FROM pg_type WHERE typnamespace = 'public'::regnamespace
  UNION ALL
  SELECT 'function:' || proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace
  UNION ALL
  SELECT 'trigger:' || tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
   WHERE c.relnamespace = 'public'::regnamespace AND NOT t.tgisinternal
) AS schema
""")
_SEQUENCES = sa.text(
    'SELECT oid::regclass::text FROM pg_class '
    "WHERE relkind = 'S' AND relnamespace = 'public'::regnamespace"
)
# The digest of the models' tables as `db.create_all()` makes them, taken once per
# process on a freshly emptied database.
_models_schema = {}


def _schema_digest(url):
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        digest = connection.execute(_SCHEMA_DIGEST).scalar()
    engine.dispose()
    return digest


def _empty_models_tables(url):
    """Empty the models' tables, if the database holds exactly them; whether it did.

    Deleting the rows of a dozen small tables and restarting their sequences costs a
    fifth of dropping the schema and creating every table, index and constraint again,
    which the PostgreSQL half of the suite did before each of its 500 tests.
    """
    if url not in _models_schema:
        return False
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        same = connection.execute(_SCHEMA_DIGEST).scalar() == _models_schema[url]
        if same:
            sequences = connection.execute(_SEQUENCES).scalars().all()
            connection.exec_driver_sql(
                ';'.join(
                    [f'DELETE FROM "{table.name}"' for table in reversed(db.metadata.sorted_tables)]
                    + [f"SELECT setval('{sequence}', 1, false)" for sequence in sequences]
                )
            )
    engine.dispose()
    return same


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


# Under mutmut (`make mutants`), the test files written for each mutated module: a
# mutant's tests run with these first, so that a mutant the module's own tests kill stops
# there (pytest -x) instead of after the few hundred tests of every page that call it too.
MUTANT_HOMES = {
    'app.mail': (
        'tests/test_delivery.py',
        'tests/test_mail_real_world.py',
        'tests/test_email_smtp.py',
    ),
    'app.addresses': ('tests/test_mail_real_world.py', 'tests/test_account_emails.py'),
    'app.auth.sessions': ('tests/test_sessions.py', 'tests/test_security.py'),
    'app.auth.tokens': ('tests/test_reset.py', 'tests/test_account_emails.py'),
    'app.auth.routes': ('tests/test_pages.py', 'tests/test_security.py'),
    'app.security': ('tests/test_security.py', 'tests/test_login_limits.py'),
    'app.models': ('tests/test_models.py', 'tests/test_reset.py', 'tests/test_account_emails.py'),
    'app.main.routes': (
        'tests/test_pages.py',
        'tests/test_queries.py',
        'tests/test_hostile_inputs.py',
        'tests/test_avatars.py',
    ),
}


def _mutant_homes():
    """The home test files of the module of the mutant mutmut has switched on, if any."""
    mutant = os.environ.get('MUTANT_UNDER_TEST', '')
    if '__mutmut_' not in mutant:
        return ()
    for module, homes in MUTANT_HOMES.items():
        if mutant.startswith(module + '.'):
            return homes
    return ()


def pytest_collection_modifyitems(config, items):
    """Put the slowest files first (`make test` hands tests out in this order).

    Under mutmut, a mutant's own module's tests go first instead (MUTANT_HOMES).
    """
    first = _mutant_homes() or SLOWEST_FIRST
    items.sort(key=lambda item: not item.nodeid.startswith(first))


# Files whose tests share what a module or session fixture starts once (a browser and
# its `make run`, the README's virtualenv, a certificate): one test process runs each
# whole. The browser files share one browser and one `make run` for the session.
WHOLE_FILES = (*SLOWEST_FIRST, 'tests/test_startup.py')


def pytest_xdist_make_scheduler(config, log):
    """Hand out the WHOLE_FILES whole and every other test on its own (`make test`).

    With a whole file to a process, a run ended with one process finishing a long file
    while the other waited. pytest-xdist's own grouping (``--dist loadgroup`` and the
    ``xdist_group`` mark) groups nothing under pytest 9, whose node ids it can no longer
    rewrite; its scheduler by scope, given our scopes, does the same.
    """
    from xdist.scheduler import LoadScopeScheduling

    class WholeFilesScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            if nodeid.startswith('tests/browser/'):
                return 'tests/browser/'
            if nodeid.startswith(WHOLE_FILES):
                return nodeid.split('::', 1)[0]
            return nodeid

    return WholeFilesScheduling(config, log)


def pytest_generate_tests(metafunc):
    """Run each test that needs a database on every database, or on SQLite if marked so."""
    if 'database_url' in metafunc.fixturenames:
        one = metafunc.definition.get_closest_marker('sqlite_only') is not None
        metafunc.parametrize('database_url', DATABASES[:1] if one else DATABASES, indirect=True)


@pytest.fixture(scope='session')
def sqlite_folder(tmp_path_factory):
    """Where the tests' SQLite databases live: in memory (/dev/shm) where the machine has it.

    SQLite syncs its journal to disk on every commit; on a disk, those waits were a third
    of the time of the SQLite tests. What the tests check does not depend on the disk.
    """
    shm = Path('/dev/shm')
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path_factory.mktemp('databases')
        return
    folder = Path(tempfile.mkdtemp(prefix='microblog-tests-', dir=shm))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def database_url(request, sqlite_folder):
    """A fresh, empty database: a SQLite file, or the PostgreSQL test database.

    On PostgreSQL, a test that builds its apps with ``make_app`` has its database
    prepared by the first one: emptied of rows when it holds the models' tables and the
    app would create them anyway, emptied of everything otherwise. A test marked
    ``fresh_database`` (its outcome depends on the planner's view of the tables) always
    gets new tables.
    """
    if request.param == 'sqlite':
        path = sqlite_folder / f'{uuid.uuid4().hex}.db'
        yield f'sqlite:///{path}'
        for suffix in ('', '-wal', '-shm', '-journal'):
            Path(f'{path}{suffix}').unlink(missing_ok=True)
        return
    if 'make_app' in request.fixturenames and not request.node.get_closest_marker('fresh_database'):
        request.node.stash[_PREPARE_POSTGRES] = True
    else:
        _reset_postgres(TEST_DATABASE_URL)
    yield TEST_DATABASE_URL


_PREPARE_POSTGRES = pytest.StashKey[bool]()


@pytest.fixture
def make_app(request, database_url):
    """Build apps on the test database with settings overridden per test."""
    apps = []

    def factory(create_tables=True, **overrides):
        tables_made = emptied = False
        if request.node.stash.get(_PREPARE_POSTGRES, False):
            # Before the first app starts its delivery worker on the database.
            request.node.stash[_PREPARE_POSTGRES] = False
            tables_made = create_tables and _empty_models_tables(database_url)
            if not tables_made:
                _reset_postgres(database_url)
                emptied = True
        overrides.setdefault('SQLALCHEMY_DATABASE_URI', database_url)
        config_class = type('CustomTestConfig', (TestConfig,), overrides)
        app = create_app(config_class)
        apps.append(app)
        if create_tables and not tables_made:
            with app.app_context():
                db.create_all()
            if emptied and database_url not in _models_schema:
                _models_schema[database_url] = _schema_digest(database_url)
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
