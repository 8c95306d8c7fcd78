"""How a safe request's transaction can go wrong, and does not: app/transactions.py.

Each test here is a way reads outside a transaction (PostgreSQL) or a read-only request's
COMMIT could lose a write, break a request's atomicity, leave a pooled connection
unusable or in autocommit mode, or serve a 500.
"""

import threading

import pytest
import sqlalchemy as sa
from flask import Response, abort, stream_with_context

from app import db
from app.models import Post, User
from tests.helpers import PASSWORD, AuthActions, add_test_views


def serve(app, path, method='GET'):
    """Serve one request in an app context of its own, as a server does."""
    return app.test_client().open(path, method=method)


def posts(app):
    """How many posts are stored, read on a connection of its own."""
    with app.app_context(), db.engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(Post)).scalar()


def about_me(app):
    with app.app_context(), db.engine.connect() as connection:
        return connection.execute(
            sa.select(User.about_me).where(User.username == 'susan')
        ).scalar_one()


def susan_id():
    return db.session.scalar(sa.select(User.id).where(User.username == 'susan'))


def refused_write(user):
    """A write the database refuses (a username cannot be NULL): 'refused', or 'kept'."""
    try:
        db.session.execute(sa.update(User).where(User.id == user).values(username=None))
    except sa.exc.IntegrityError:
        db.session.rollback()
        return 'refused'
    return 'kept'


@pytest.fixture
def routes(make_app, database_url):
    """An app with two pooled connections (given up for after a second) and test routes.

    No app context stays pushed: each request pushes its own and removes its session
    at its end, as under a server (with one pushed, the test client's requests would
    share it, and their sessions would end only with the test).
    """
    app = routes_app = make_app(
        # One connection for the requests, and one for a test's second party.
        SQLALCHEMY_ENGINE_OPTIONS={'pool_size': 1, 'max_overflow': 1, 'pool_timeout': 1},
        MAIL_QUEUE='none',
    )

    def plain():
        db.session.scalar(sa.select(User.id).where(User.username == 'susan'))
        return 'ok'

    def lose_connection():
        """A plain read, then the server ends the connection (as on a restart)."""
        plain()
        try:
            db.session.execute(sa.select(sa.func.pg_terminate_backend(sa.func.pg_backend_pid())))
        except Exception as exc:  # noqa: BLE001 - the test says which
            db.session.rollback()
            return f'{type(exc).__name__}: {getattr(exc, "connection_invalidated", None)}', 503
        return 'not lost'

    def text_write():
        """A write written as text, left uncommitted: a safe request's is rolled back."""
        plain()
        db.session.execute(
            sa.text('UPDATE "user" SET about_me = \'text\' WHERE id = :id'), {'id': susan_id()}
        )
        return 'ok'

    def core_write():
        """A write run on the session's connection, left uncommitted: rolled back."""
        plain()
        db.session.connection().execute(
            sa.update(User).where(User.username == 'susan').values(about_me='core')
        )
        return 'ok'

    def streamed():
        """A plain read streamed from a server-side cursor."""
        ids = db.session.scalars(sa.select(User.id).execution_options(stream_results=True)).all()
        return str(len(ids))

    def yielded():
        """ORM objects read in batches, from a server-side cursor."""
        users = db.session.scalars(sa.select(User).execution_options(yield_per=10)).all()
        return str(len(users))

    def cte_write_then_refused():
        """A SELECT that inserts through a CTE, then a refused write: neither may stay."""
        user = susan_id()
        inserted = sa.insert(Post).values(body='first', user_id=user).returning(Post.id).cte()
        db.session.execute(sa.select(inserted.c.id))
        return refused_write(user)

    def savepoint_then_refused():
        """A savepoint first, a write released into the request, then a refused write."""
        user = susan_id()
        with db.session.begin_nested():
            db.session.add(Post(body='in a savepoint', user_id=user))
        return refused_write(user)

    def write_then_raise():
        """A write flushed, then the view fails."""
        plain()
        db.session.add(Post(body='flushed', user_id=susan_id()))
        db.session.flush()
        raise RuntimeError('the page failed after writing')

    def read_then_raise():
        plain()
        raise RuntimeError('the page failed after reading')

    def write_then_missing():
        db.session.add(Post(body='flushed', user_id=susan_id()))
        db.session.flush()
        abort(404)

    def commit_then_write():
        """A write committed, then a second write left uncommitted."""
        db.session.add(Post(body='committed', user_id=susan_id()))
        db.session.commit()
        plain()
        db.session.execute(sa.update(User).where(User.username == 'susan').values(about_me='x'))
        return 'ok'

    def locked_in_a_subquery():
        """A queue's claim: FOR UPDATE SKIP LOCKED in a subquery; the lock held to the end."""
        claim = sa.select(User.id).limit(1).with_for_update(skip_locked=True).subquery()
        db.session.scalar(sa.select(claim.c.id))
        try:
            with routes_app.app_context(), db.engine.connect() as other:
                other.execute(
                    sa.select(User.id).where(User.username == 'susan').with_for_update(nowait=True)
                )
        except sa.exc.OperationalError:
            return 'held'
        return 'not held'

    def repeatable_read():
        """Two reads of a page that asked for one snapshot, a change committed between."""
        db.session.connection(execution_options={'isolation_level': 'REPEATABLE READ'})
        read = sa.select(User.about_me).where(User.username == 'susan')
        first = db.session.scalar(read)
        with routes_app.app_context(), db.engine.begin() as other:
            other.execute(sa.update(User).values(about_me='changed meanwhile'))
        return f'{first}, {db.session.scalar(read)}'

    def autocommitted_write():
        """A page that asked for autocommit: its write is kept as it runs."""
        db.session.connection(execution_options={'isolation_level': 'AUTOCOMMIT'})
        plain()
        db.session.execute(sa.update(User).values(about_me='autocommitted'))
        return 'ok'

    def flushed_write():
        db.session.add(Post(body='flushed', user_id=susan_id()))
        db.session.flush()
        plain()
        return 'ok'

    def streamed_page():
        """A page streamed as it is read, after the request's hooks have run."""

        def rows():
            yield 'start '
            yield str(db.session.scalar(sa.select(sa.func.count()).select_from(User)))
            connection = db.session.connection().connection.dbapi_connection
            yield f' {getattr(connection, "autocommit", None)}'

        return Response(stream_with_context(rows()))

    def status():
        return db.session.connection().connection.dbapi_connection.info.transaction_status.name

    def lock_by_get():
        """session.get with a row lock: in a transaction."""
        db.session.get(User, susan_id(), with_for_update=True)
        return status()

    def refresh_with_lock():
        user = db.session.get(User, susan_id())
        db.session.refresh(user, with_for_update={'nowait': True})
        return status()

    def lazy_load_then_write():
        user = db.session.get(User, susan_id())
        db.session.scalars(user.posts.select()).all()
        user.about_me = 'lazy'
        db.session.flush()
        return status()

    add_test_views(
        app,
        plain,
        lose_connection,
        text_write,
        core_write,
        streamed,
        yielded,
        cte_write_then_refused,
        savepoint_then_refused,
        write_then_raise,
        read_then_raise,
        write_then_missing,
        commit_then_write,
        lock_by_get,
        refresh_with_lock,
        lazy_load_then_write,
        locked_in_a_subquery,
        streamed_page,
        repeatable_read,
        autocommitted_write,
        flushed_write,
    )
    with app.app_context():
        db.session.add(User(username='susan', email='susan@example.com', about_me='as stored'))
        db.session.commit()
        db.session.remove()
    yield app


def postgresql(database_url):
    if not database_url.startswith('postgresql'):
        pytest.skip('reads outside a transaction are for PostgreSQL')


def pooled_autocommit(app):
    """Whether the pool's one connection, as the next user gets it, is in autocommit mode."""
    with app.app_context():
        connection = db.engine.raw_connection()
        try:
            return connection.dbapi_connection.autocommit
        finally:
            connection.close()


def test_a_connection_lost_while_reading_goes_back_to_the_pool(routes, database_url):
    """The server restarting during a GET's reads costs that page, and no pool slot."""
    postgresql(database_url)
    response = serve(routes, '/_test/lose_connection')
    assert response.status_code == 503
    # The pool's connection is back (a slot lost for good would be one fewer for every
    # later page and the delivery worker, until none was left and every page timed out).
    with routes.app_context():
        assert db.engine.pool.checkedout() == 0
    # A new connection is made for the next pages.
    assert serve(routes, '/_test/plain').status_code == 200
    assert serve(routes, '/_test/plain', 'POST').status_code == 200
    # And the page was told what happened: the connection was lost.
    assert response.text == 'OperationalError: True'


@pytest.mark.parametrize('path', ['flushed_write', 'text_write', 'core_write'])
def test_a_write_of_a_safe_request_left_uncommitted_is_rolled_back(routes, path):
    """However written, an uncommitted write of a GET is not committed by its ending."""
    assert serve(routes, f'/_test/{path}').status_code == 200
    assert about_me(routes) == 'as stored'
    assert posts(routes) == 0


@pytest.mark.parametrize('path', ['streamed', 'yielded'])
def test_a_streamed_read_of_a_safe_request_is_served(routes, database_url, path):
    """A server-side cursor (stream_results, yield_per) needs a transaction on PostgreSQL."""
    postgresql(database_url)
    response = serve(routes, f'/_test/{path}')
    assert response.status_code == 200
    assert response.text == '1'


def test_a_select_that_writes_through_a_cte_stays_in_the_requests_transaction(routes, database_url):
    """INSERT ... RETURNING in a WITH of a SELECT is a write: not committed on its own."""
    postgresql(database_url)
    assert serve(routes, '/_test/cte_write_then_refused').text == 'refused'
    assert posts(routes) == 0


def test_a_row_lock_taken_in_a_subquery_is_held_to_the_end_of_the_request(routes, database_url):
    """SELECT ... FROM (SELECT ... FOR UPDATE SKIP LOCKED): a claim, whatever its shape."""
    postgresql(database_url)
    assert serve(routes, '/_test/locked_in_a_subquery').text == 'held'


def test_a_safe_request_that_asked_for_one_snapshot_reads_in_it(routes, database_url):
    """REPEATABLE READ, asked for on the session's connection, holds for a GET's reads too."""
    postgresql(database_url)
    assert serve(routes, '/_test/repeatable_read').text == 'as stored, as stored'


def test_a_safe_request_that_asked_for_autocommit_keeps_its_writes(routes, database_url):
    postgresql(database_url)
    assert serve(routes, '/_test/autocommitted_write').status_code == 200
    assert about_me(routes) == 'autocommitted'
    assert pooled_autocommit(routes) is False


def test_a_streamed_page_reads_and_gives_back_a_transactional_connection(routes, database_url):
    response = serve(routes, '/_test/streamed_page')
    assert response.status_code == 200
    assert response.text.startswith('start 1')
    if database_url.startswith('postgresql'):
        assert pooled_autocommit(routes) is False
        assert serve(routes, '/_test/streamed_page', 'HEAD').status_code == 200
        assert pooled_autocommit(routes) is False


def test_a_savepoint_of_a_safe_request_stays_in_the_requests_transaction(routes, database_url):
    # pysqlite starts no transaction for a SAVEPOINT, whose RELEASE then commits.
    postgresql(database_url)
    assert serve(routes, '/_test/savepoint_then_refused').text == 'refused'
    assert posts(routes) == 0


@pytest.mark.parametrize('path', ['write_then_raise', 'read_then_raise'])
def test_a_safe_request_that_raised_rolls_back_and_returns_a_transactional_connection(
    routes, database_url, path
):
    with pytest.raises(RuntimeError):
        serve(routes, f'/_test/{path}')
    assert posts(routes) == 0
    if database_url.startswith('postgresql'):
        assert pooled_autocommit(routes) is False


def test_a_safe_request_that_wrote_then_answered_404_is_rolled_back(routes):
    assert serve(routes, '/_test/write_then_missing').status_code == 404
    assert posts(routes) == 0


def test_a_safe_request_commits_one_write_and_rolls_back_the_next(routes, database_url):
    assert serve(routes, '/_test/commit_then_write').status_code == 200
    assert posts(routes) == 1
    assert about_me(routes) == 'as stored'
    if database_url.startswith('postgresql'):
        assert pooled_autocommit(routes) is False


@pytest.mark.parametrize('path', ['lock_by_get', 'refresh_with_lock', 'lazy_load_then_write'])
def test_orm_locks_and_flushes_of_a_safe_request_run_in_a_transaction(routes, database_url, path):
    postgresql(database_url)
    for method in ('GET', 'HEAD'):
        response = serve(routes, f'/_test/{path}', method)
        assert response.status_code == 200
        if method == 'GET':
            assert response.text == 'INTRANS'
    assert about_me(routes) == 'as stored'


def test_the_delivery_thread_gets_a_transactional_connection_after_a_safe_request(
    routes, database_url
):
    """A connection a GET read on in autocommit mode reaches another thread transactional."""
    postgresql(database_url)
    assert serve(routes, '/_test/plain').status_code == 200
    seen = []

    def worker():
        with routes.app_context():
            try:
                db.session.scalar(sa.select(User.id))
                connection = db.session.connection().connection.dbapi_connection
                seen.append((connection.autocommit, connection.info.transaction_status.name))
            finally:
                db.session.remove()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [(False, 'INTRANS')]


@pytest.mark.parametrize('pre_ping', [False, True])
def test_the_first_page_after_a_database_restart_costs_no_pool_slot(
    make_app, database_url, pre_ping
):
    """The pool's connections, ended by the server while idle, as on a restart."""
    postgresql(database_url)
    app = make_app(
        SQLALCHEMY_ENGINE_OPTIONS={
            'pool_size': 1,
            'max_overflow': 0,
            'pool_timeout': 1,
            'pool_pre_ping': pre_ping,
        },
        MAIL_QUEUE='none',
    )
    with app.app_context():
        user = User(username='susan', email='susan@example.com')
        user.set_password(PASSWORD)
        db.session.add(user)
        db.session.commit()
        db.session.remove()
    client = app.test_client()
    AuthActions(client).login()
    assert client.get('/explore').status_code == 200
    with app.app_context():
        pid = db.engine.raw_connection()
        try:
            backend = pid.dbapi_connection.info.backend_pid
        finally:
            pid.close()
    killer = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    with killer.connect() as connection:
        assert connection.scalar(sa.select(sa.func.pg_terminate_backend(backend)))
    killer.dispose()
    if pre_ping:
        # The ping finds the connection gone, and the page gets a new one.
        assert client.get('/explore').status_code == 200
    else:
        # The page that finds the connection gone fails, as it always has ...
        with pytest.raises(Exception) as raised:  # noqa: PT011 - which one is checked below
            client.get('/explore')
    # ... and gives the pool its slot back: the next pages are served.
    with app.app_context():
        assert db.engine.pool.checkedout() == 0
    assert client.get('/explore').status_code == 200
    assert client.get('/explore', method='HEAD').status_code == 200
    if not pre_ping:
        # With the database's own error, not one raised on the way back to the pool.
        assert isinstance(raised.value, sa.exc.OperationalError), raised.value
