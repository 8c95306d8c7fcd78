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
"""

import sqlalchemy as sa
from flask import request

SAFE_METHODS = frozenset({'GET', 'HEAD'})
_WROTE = 'transaction_wrote'


def init_app(app, db):
    """End the read-only transaction of each safe request that succeeds with COMMIT."""
    # The session factory is db's, shared by every app of this process: listen once.
    for name, listener in _LISTENERS:
        if not sa.event.contains(db.session, name, listener):
            sa.event.listen(db.session, name, listener)

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


_LISTENERS = (
    ('after_flush', _mark_written),
    ('do_orm_execute', _mark_if_written),
    ('after_transaction_end', _forget_writes),
)
