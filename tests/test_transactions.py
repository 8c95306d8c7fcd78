"""A safe request that only read ends its transaction with COMMIT; anything else rolls back.

psycopg forgets its prepared statements on every rollback, so pages that ended with one
made PostgreSQL plan their statements on every request. Ending a read with COMMIT is the
same to the database; ending a write with it is not, so each way a request can write is
tried here and must still be rolled back.
"""

import logging
import threading

import pytest
import sqlalchemy as sa
from flask import abort

from app import db
from app.models import Post, User, utcnow
from tests.helpers import PASSWORD, AuthActions, add_test_views


class Endings:
    """The COMMITs and ROLLBACKs this thread sends (not the mail delivery thread's)."""

    def __init__(self, engine):
        self.engine = engine
        self.seen = []
        self.thread = threading.get_ident()

    def __enter__(self):
        sa.event.listen(self.engine, 'commit', self._commit)
        sa.event.listen(self.engine, 'rollback', self._rollback)
        return self

    def __exit__(self, *exc):
        sa.event.remove(self.engine, 'commit', self._commit)
        sa.event.remove(self.engine, 'rollback', self._rollback)

    def _commit(self, connection):
        if threading.get_ident() == self.thread:
            self.seen.append('commit')

    def _rollback(self, connection):
        if threading.get_ident() == self.thread:
            self.seen.append('rollback')


def about_me(app, username='susan'):
    """The stored about_me of a user, read on a connection of its own."""
    with app.app_context(), db.engine.connect() as connection:
        return connection.execute(
            sa.select(User.about_me).where(User.username == username)
        ).scalar_one()


@pytest.fixture
def writer(make_app):
    """An app with test routes that read, or write without committing, then answer."""
    app = make_app()

    def susan():
        return db.session.scalar(sa.select(User).where(User.username == 'susan'))

    def pending():
        susan().about_me = 'left pending'
        return 'ok'

    def flushed():
        susan().about_me = 'flushed'
        db.session.flush()
        return 'ok'

    def executed():
        db.session.execute(
            sa.update(User).where(User.username == 'susan').values(about_me='executed')
        )
        return 'ok'

    def committed_then_read():
        susan().about_me = 'committed'
        db.session.commit()
        susan()
        return 'ok'

    def read_then_missing():
        susan()
        abort(404)

    def read_then_failed():
        susan()
        return 'server error', 500

    def read():
        susan()
        return 'ok'

    add_test_views(
        app,
        pending,
        flushed,
        executed,
        committed_then_read,
        read_then_missing,
        read_then_failed,
        read,
    )
    with app.app_context():
        user = User(username='susan', email='susan@example.com', about_me='as stored')
        db.session.add(user)
        db.session.commit()
        db.session.remove()
    # No app context stays pushed: the test client's requests would share it, and their
    # session would end with the test instead of with each request.
    yield app


def serve(app, path, method='GET'):
    """Serve one request as a server does: its own app context, its session removed after."""
    with app.app_context():
        engine = db.engine
    with Endings(engine) as endings:
        response = app.test_client().open(path, method=method)
    return response, endings.seen


def test_a_page_that_only_read_ends_with_commit(writer):
    response, endings = serve(writer, '/_test/read')
    assert response.status_code == 200
    assert endings[-1:] == ['commit'] and 'rollback' not in endings


@pytest.mark.parametrize('path', ['pending', 'flushed', 'executed'])
def test_a_page_that_wrote_without_committing_is_rolled_back(writer, path):
    response, endings = serve(writer, f'/_test/{path}')
    assert response.status_code == 200
    assert 'commit' not in endings and endings[-1:] == ['rollback']
    assert about_me(writer) == 'as stored'


def test_a_write_committed_by_the_page_is_kept_and_its_later_read_committed(writer):
    response, endings = serve(writer, '/_test/committed_then_read')
    assert response.status_code == 200
    assert about_me(writer) == 'committed'
    assert endings == ['commit', 'commit']


@pytest.mark.parametrize(
    ('path', 'method', 'status'),
    [
        ('read_then_missing', 'GET', 404),
        ('read_then_failed', 'GET', 500),
        ('read', 'POST', 200),
    ],
)
def test_an_error_page_or_an_unsafe_method_is_rolled_back(writer, path, method, status):
    response, endings = serve(writer, f'/_test/{path}', method)
    assert response.status_code == status
    assert 'commit' not in endings and endings[-1:] == ['rollback']


def test_a_failed_commit_of_a_read_still_serves_the_page(writer, monkeypatch, caplog):
    """The database going away between the page's reads and its COMMIT loses nothing."""

    def lost(self):
        raise sa.exc.OperationalError('COMMIT', {}, OSError('server closed the connection'))

    monkeypatch.setattr(sa.orm.Session, 'commit', lost)
    with caplog.at_level(logging.WARNING):
        response, _ = serve(writer, '/_test/read')
    assert response.status_code == 200
    assert 'COMMIT of a read-only transaction failed' in caplog.text
    monkeypatch.undo()
    assert serve(writer, '/_test/read')[0].status_code == 200


@pytest.mark.fresh_database
def test_postgresql_keeps_the_pages_statements_prepared(make_app, database_url):
    """After a few pages, their statements are prepared and planned once for every reader."""
    if not database_url.startswith('postgresql'):
        pytest.skip('prepared statements are kept by psycopg, on PostgreSQL')
    app = make_app(MAIL_QUEUE='none')
    with app.app_context():
        for name in ('susan', 'john'):
            user = User(username=name, email=f'{name}@example.com')
            user.set_password(PASSWORD)
            db.session.add(user)
        db.session.commit()
        # Enough posts that a plan for an unknown number of them would be another plan.
        john = db.session.scalar(sa.select(User.id).where(User.username == 'john'))
        db.session.execute(
            sa.insert(Post),
            [{'body': f'post {n}', 'user_id': john, 'timestamp': utcnow()} for n in range(3000)],
        )
        db.session.commit()
        db.session.execute(sa.text('ANALYZE'))
        db.session.commit()
        db.session.remove()
    client = app.test_client()
    AuthActions(client).login()
    # psycopg prepares a statement at its sixth run; PostgreSQL plans its first five
    # runs as prepared for their parameters, then keeps one plan if it is as good.
    for _ in range(14):
        for path in ('/index', '/explore', '/user/john'):
            assert client.get(path).status_code == 200
    with app.app_context(), db.engine.connect() as connection:
        prepared = connection.exec_driver_sql(
            'SELECT statement, generic_plans FROM pg_prepared_statements'
        ).all()
    statements = [statement for statement, _ in prepared]
    assert any('FROM user_session' in statement for statement in statements), statements
    listings = [(statement, generic) for statement, generic in prepared if 'FROM post' in statement]
    # The home page's, /explore's and the profile's.
    assert len(listings) == 3, statements
    # Planned once and reused: a listing planned anew for each reader has no generic plan.
    assert all(generic > 0 for _, generic in listings), listings


@pytest.fixture
def reader(make_app, database_url):
    """On PostgreSQL, an app with one pooled connection and routes that say how they ran."""
    if not database_url.startswith('postgresql'):
        pytest.skip('reads outside a transaction are for PostgreSQL')
    app = make_app(SQLALCHEMY_ENGINE_OPTIONS={'pool_size': 1, 'max_overflow': 0})

    def status():
        connection = db.session.connection().connection.dbapi_connection
        return connection.info.transaction_status.name

    def plain():
        db.session.scalar(sa.select(User.id).where(User.username == 'susan'))
        return status()

    def locked():
        db.session.scalar(sa.select(User.id).where(User.username == 'susan').with_for_update())
        return status()

    def text():
        db.session.execute(sa.text('SELECT 1'))
        return status()

    def two_writes():
        """Two writes, the second refused: neither may stay."""
        susan = db.session.scalar(sa.select(User).where(User.username == 'susan'))
        db.session.execute(sa.insert(Post).values(body='first', user_id=susan.id))
        try:
            db.session.execute(sa.update(User).where(User.id == susan.id).values(username=None))
        except sa.exc.IntegrityError:
            db.session.rollback()
            return 'refused'
        return 'kept'

    add_test_views(app, plain, locked, text, two_writes)
    with app.app_context():
        db.session.add(User(username='susan', email='susan@example.com'))
        db.session.commit()
        db.session.remove()
    yield app  # with no app context pushed, as `writer`


def test_a_safe_request_reads_outside_a_transaction_and_anything_else_inside(reader):
    """No BEGIN and no COMMIT for a GET's plain reads: two round trips fewer a page."""
    assert serve(reader, '/_test/plain')[0].text == 'IDLE'
    assert serve(reader, '/_test/plain', 'HEAD')[0].status_code == 200
    assert serve(reader, '/_test/plain', 'POST')[0].text == 'INTRANS'


@pytest.mark.parametrize('path', ['locked', 'text'])
def test_a_locking_or_text_statement_of_a_safe_request_runs_in_a_transaction(reader, path):
    """A row lock is held to the end of the request; SQL written as text may be anything."""
    assert serve(reader, f'/_test/{path}')[0].text == 'INTRANS'


def test_the_writes_of_a_safe_request_stay_one_transaction(reader):
    response, _ = serve(reader, '/_test/two_writes')
    assert response.text == 'refused'
    with reader.app_context(), db.engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(Post)).scalar() == 0


def test_a_connection_goes_back_to_the_pool_in_transactions(reader):
    """The next user of the connection (a form, the delivery worker) gets transactions."""
    assert serve(reader, '/_test/plain')[0].text == 'IDLE'
    with reader.app_context():
        connection = db.engine.raw_connection()  # the pool's one connection
        try:
            assert connection.dbapi_connection.autocommit is False
        finally:
            connection.close()
