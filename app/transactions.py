"""How a request's database transaction ends.

A transaction that wrote nothing ends the same for the database with COMMIT as with
ROLLBACK, but not for psycopg: on a rollback it forgets the statements it has prepared on
the connection, and counts again from zero. Every page ended with the rollback of the
session's teardown, so PostgreSQL parsed and planned the same two or three statements
on every page: planning the session lookup costs it seven times running it. A GET or
HEAD that only read, and whose page is not an error, now ends with COMMIT: after five
pages a connection's statements are prepared, and planned no more.

What wrote, or tried to, still ends as it did: ORM changes left pending, anything flushed
or executed as INSERT, UPDATE or DELETE in the transaction and not committed (through the
session or on its connection), any statement written as text, any other method, any
status of 400 or more, and a request that raised. Those roll back.

On PostgreSQL a GET or HEAD reads outside a transaction, as Django does by default: its
connection is in autocommit mode until something other than a plain SELECT is about to
run, and that statement opens a real transaction, which then ends as above. Under READ
COMMITTED every statement sees its own snapshot, inside a transaction or not, so plain
reads lose nothing; what they save is two round trips a page (BEGIN and COMMIT, each a
wait for the server and, with threaded workers, a hand-over of the GIL). A SELECT FOR
UPDATE (even in a subquery), a SELECT with an INSERT, UPDATE or DELETE in its WITH, a
streamed SELECT (a server-side cursor), a statement written as text and any write open
the transaction first, so their locks and their atomicity are what they were. A
connection asked for another isolation level (REPEATABLE READ, SERIALIZABLE, AUTOCOMMIT)
is left as asked. The connection is transactional again when it goes back to the pool,
lost or not. What cannot be told from a read: a SELECT of a function that writes or
takes a transaction's lock (pg_advisory_xact_lock, set_config(..., true)); write such
a statement as text.
"""

import weakref

import sqlalchemy as sa
from flask import has_request_context, request
from psycopg.pq import TransactionStatus
from sqlalchemy.sql import visitors
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.selectable import ForUpdateArg

SAFE_METHODS = frozenset({'GET', 'HEAD'})
_WROTE = 'transaction_wrote'
# On a pooled connection's info: it was put in autocommit mode for a safe request's reads.
_READING = 'reading_outside_transaction'
# On a pooled connection's info: the info of the session whose transaction it is in, where
# a statement that may write marks it so (text, or a write run on the connection itself).
_SESSION_INFO = 'session_info'
# What a compiled statement is, found once for each (they are cached by the engine).
_READ, _LOCKING_READ, _OTHER = 'read', 'locking read', 'other'
_kinds = weakref.WeakKeyDictionary()
# PostgreSQL's READ UNCOMMITTED is READ COMMITTED.
_EACH_STATEMENT_A_SNAPSHOT = frozenset({'READ COMMITTED', 'READ UNCOMMITTED'})


def init_app(app, db):
    """End the read-only transaction of each safe request that succeeds with COMMIT."""
    # The session factory is db's, shared by every app of this process: listen once.
    for name, listener in _LISTENERS:
        if not sa.event.contains(db.session, name, listener):
            sa.event.listen(db.session, name, listener)
    with app.app_context():
        engine = db.engine
    # On every database: whatever the session's ORM events do not see (a text UPDATE, a
    # write run on db.session.connection()) still counts as a write of its transaction.
    sa.event.listen(engine, 'before_cursor_execute', _before_statement)
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
    connection.info[_SESSION_INFO] = session.info
    if connection.dialect.driver != 'psycopg' or not has_request_context():
        return
    if request.method not in SAFE_METHODS:
        return
    dbapi_connection = connection.connection.dbapi_connection
    # Nothing sent yet: psycopg sends BEGIN with the first statement, not before. Only
    # under READ COMMITTED, where each statement has its own snapshot anyway: a
    # transaction asked to be REPEATABLE READ or SERIALIZABLE reads in one snapshot; one
    # in autocommit mode already (isolation_level='AUTOCOMMIT') stays so.
    if (
        dbapi_connection.info.transaction_status == TransactionStatus.IDLE
        and not dbapi_connection.autocommit
        and _reads_committed(connection, dbapi_connection)
    ):
        dbapi_connection.autocommit = True
        connection.info[_READING] = True


def _reads_committed(connection, dbapi_connection):
    level = dbapi_connection.isolation_level
    if level is None:  # the server's default, which SQLAlchemy read on the first connection
        return connection.dialect.default_isolation_level in _EACH_STATEMENT_A_SNAPSHOT
    return level.name.replace('_', ' ') in _EACH_STATEMENT_A_SNAPSHOT


def _kind(context):
    """A plain read, a read that locks rows, or anything else (which may write)."""
    compiled = context.compiled
    if compiled is None:  # SQL given to the driver as it is
        return _OTHER
    kind = _kinds.get(compiled)
    if kind is None:
        kind = _kinds[compiled] = _kind_of(getattr(compiled, 'statement', None))
    return kind


def _kind_of(statement):
    # A SELECT built with SQLAlchemy, with no INSERT, UPDATE or DELETE in it (a WITH
    # ... RETURNING writes), and without FOR UPDATE or SHARE, even in a subquery (a
    # claim in a subquery locks as well). Text SQL is never taken for a read.
    if not isinstance(statement, sa.Select):
        return _OTHER
    kind = _READ
    for element in visitors.iterate(statement):
        if isinstance(element, UpdateBase):
            return _OTHER
        if isinstance(element, ForUpdateArg):
            kind = _LOCKING_READ
    return kind


def _before_statement(connection, cursor, statement, parameters, context, many):
    """Mark the session's transaction written; on a reading connection, open one first."""
    kind = _kind(context)
    if kind is _OTHER:
        session_info = connection.info.get(_SESSION_INFO)
        if session_info is not None:
            session_info[_WROTE] = True
    # A server-side cursor (stream_results, yield_per) is declared in a transaction.
    if (kind is not _READ or context.execution_options.get('stream_results')) and (
        connection.info.pop(_READING, False)
    ):
        connection.connection.dbapi_connection.autocommit = False


def _back_to_transactions(dbapi_connection, connection_record):
    """A connection goes back to the pool as it came: every statement in a transaction."""
    if connection_record is None:
        return
    connection_record.info.pop(_SESSION_INFO, None)
    # No connection when it was invalidated (lost, as when the server restarted): the
    # pool makes a new one, transactional, and must get its record back all the same.
    if connection_record.info.pop(_READING, False) and dbapi_connection is not None:
        dbapi_connection.autocommit = False


_LISTENERS = (
    ('after_flush', _mark_written),
    ('do_orm_execute', _mark_if_written),
    ('after_transaction_end', _forget_writes),
    ('after_begin', _read_outside_transaction),
)
