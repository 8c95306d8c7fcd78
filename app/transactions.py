"""How a request's database transaction ends.

A transaction that wrote nothing ends the same for the database with COMMIT as with
ROLLBACK, but not for psycopg: on a rollback it forgets the statements it has prepared on
the connection, and counts again from zero. Every page ended with the rollback of the
session's teardown, so PostgreSQL parsed and planned the same two or three statements
on every page: planning the session lookup costs it seven times running it. A GET or
HEAD that only read, and whose page is not an error, now ends with COMMIT: after five
pages a connection's statements are prepared, and planned no more.

What wrote, or tried to, still ends as it did: ORM changes left pending, anything flushed
or executed as INSERT, UPDATE or DELETE in the transaction and not committed, any other
method, any status of 400 or more, and a request that raised. Those roll back.

On PostgreSQL a GET or HEAD reads outside a transaction, as Django does by default: its
connection is in autocommit mode until something other than a plain SELECT is about to
run, and that statement opens a real transaction, which then ends as above. Under READ
COMMITTED every statement sees its own snapshot, inside a transaction or not, so plain
reads lose nothing; what they save is two round trips a page (BEGIN and COMMIT, each a
wait for the server and, with threaded workers, a hand-over of the GIL). A SELECT FOR
UPDATE, a statement written as text and any write open the transaction first, so their
locks and their atomicity are what they were. The connection is transactional again when
it goes back to the pool.
"""

import sqlalchemy as sa
from flask import has_request_context, request
from psycopg.pq import TransactionStatus

SAFE_METHODS = frozenset({'GET', 'HEAD'})
_WROTE = 'transaction_wrote'
# On a pooled connection's info: it was put in autocommit mode for a safe request's reads.
_READING = 'reading_outside_transaction'


def init_app(app, db):
    """End the read-only transaction of each safe request that succeeds with COMMIT."""
    # The session factory is db's, shared by every app of this process: listen once.
    for name, listener in _LISTENERS:
        if not sa.event.contains(db.session, name, listener):
            sa.event.listen(db.session, name, listener)
    with app.app_context():
        engine = db.engine
    if engine.dialect.driver == 'psycopg':
        sa.event.listen(engine, 'before_cursor_execute', _open_transaction_to_write)
        sa.event.listen(engine, 'checkin', _back_to_transactions)

    @app.after_request
    def end_reads_with_commit(response):
        if request.method in SAFE_METHODS and response.status_code < 400:
            session = db.session()
            if session.in_transaction() and not wrote(session):
                try:
                    session.commit()
                except sa.exc.DBAPIError:
                    # The page is read already: a lost COMMIT of a read loses nothing,
                    # and the teardown's rollback puts the session back in order.
                    app.logger.warning('COMMIT of a read-only transaction failed', exc_info=True)
        return response


def wrote(session):
    """Whether the session's transaction changed, or may change, anything."""
    return bool(session.info.get(_WROTE) or session.new or session.dirty or session.deleted)


def _mark_written(session, flush_context):
    session.info[_WROTE] = True


def _mark_if_written(state):
    if state.is_insert or state.is_update or state.is_delete:
        state.session.info[_WROTE] = True


def _forget_writes(session, transaction):
    if transaction.parent is None:
        session.info.pop(_WROTE, None)


def _read_outside_transaction(session, transaction, connection):
    """As a safe request's session takes a PostgreSQL connection: autocommit, for its reads."""
    if connection.dialect.driver != 'psycopg' or not has_request_context():
        return
    if request.method not in SAFE_METHODS:
        return
    dbapi_connection = connection.connection.dbapi_connection
    # Nothing sent yet: psycopg sends BEGIN with the first statement, not before.
    if dbapi_connection.info.transaction_status == TransactionStatus.IDLE:
        dbapi_connection.autocommit = True
        connection.info[_READING] = True


def _is_plain_read(context):
    # A SELECT built with SQLAlchemy, without FOR UPDATE (which the Select keeps as
    # _for_update_arg; no public attribute says it). Text SQL is never taken for a read.
    compiled = context.compiled
    statement = getattr(compiled, 'statement', None)
    return isinstance(statement, sa.Select) and statement._for_update_arg is None


def _open_transaction_to_write(connection, cursor, statement, parameters, context, many):
    """Before anything but a plain SELECT runs on a reading connection: a transaction."""
    if connection.info.get(_READING) and not _is_plain_read(context):
        connection.info.pop(_READING)
        connection.connection.dbapi_connection.autocommit = False


def _back_to_transactions(dbapi_connection, connection_record):
    """A connection goes back to the pool as it came: every statement in a transaction."""
    if connection_record is not None and connection_record.info.pop(_READING, False):
        dbapi_connection.autocommit = False


_LISTENERS = (
    ('after_flush', _mark_written),
    ('do_orm_execute', _mark_if_written),
    ('after_transaction_end', _forget_writes),
    ('after_begin', _read_outside_transaction),
)
