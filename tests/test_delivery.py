"""Email that is never lost: the outbox, retries, claims, the thread worker, RQ, the commands."""

import asyncio
import logging
import re
import smtplib
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from app import db
from app.mail import deliver_pending, kinds, send_email, workers
from app.mail.outbox import (
    DeliveryReport,
    Sender,
    backoff_seconds,
    candidate_ids,
    claim_due,
    closes_connection,
    describe,
    is_permanent,
    next_retry_at,
    renew,
    take,
)
from app.mail.smtp import Courier
from app.models import OutboundEmail, utcnow
from tests.helpers import TEST_REDIS_URL
from tests.kinds import BROKEN_KIND, TEST_KIND, build_delivery_test, label_of
from tests.mailserver import HangUpServer, MailServer, RecordingHandler, free_port


def queue_messages(count, prefix='message'):
    """Store ``count`` messages through send_email, as a view would."""
    for number in range(count):
        address = f'user{number}@example.com'
        send_email(TEST_KIND, {'to': address, 'label': f'{prefix} {number}'}, recipient=address)


def rows():
    db.session.expire_all()
    return db.session.scalars(sa.select(OutboundEmail).order_by(OutboundEmail.id)).all()


def later(seconds):
    return utcnow() + timedelta(seconds=seconds)


@pytest.fixture
def port():
    """A free port for an SMTP server that is not started yet."""
    return free_port()


@pytest.fixture
def manual_app(make_app, port):
    """An app that really sends to 127.0.0.1:<port>, delivering only when the test says."""
    app = make_app(
        MAIL_SUPPRESS_SEND=False,
        MAIL_SERVER='127.0.0.1',
        MAIL_PORT=port,
        MAIL_QUEUE='none',
        MAIL_MAX_ATTEMPTS=3,
        MAIL_RETRY_BACKOFF=30,
    )
    with app.app_context():
        yield app


def test_server_down_then_up_every_message_arrives_once(manual_app, port):
    queue_messages(20)
    report = deliver_pending()
    assert len(report.retrying) == 20
    for row in rows():
        assert (row.status, row.attempts) == ('pending', 1)
        assert 'ConnectionRefusedError' in row.last_error
        assert row.next_attempt_at > utcnow()

    server = MailServer(port).start()
    try:
        assert deliver_pending().attempted == 0  # nothing is due yet
        report = deliver_pending(now=later(31))
        assert len(report.sent) == 20
        labels = sorted(label_of(received) for received in server.messages)
        assert labels == sorted(f'message {number}' for number in range(20))
        assert {row.status for row in rows()} == {'sent'}
        assert all(row.sent_at is not None for row in rows())
        assert deliver_pending(now=later(3600)).attempted == 0
        assert len(server.messages) == 20
    finally:
        server.stop()


def test_each_sender_keeps_one_connection_for_its_batches(manual_app, port):
    server = MailServer(port).start()
    try:
        queue_messages(40)
        assert len(deliver_pending().sent) == 40
        assert 1 <= server.handler.connections <= manual_app.config['MAIL_CONNECTIONS'] < 40
        assert len(server.messages) == 40
    finally:
        server.stop()


def test_temporary_refusal_is_retried_then_arrives(manual_app, port):
    server = MailServer(port).start()
    server.handler.script = ['451 Try again later', '451 Try again later']
    try:
        queue_messages(1)
        assert len(deliver_pending().retrying) == 1
        assert '451 Try again later' in rows()[0].last_error
        assert len(deliver_pending(now=later(31)).retrying) == 1  # backoff doubled: 60 s
        assert deliver_pending(now=later(61)).attempted == 0
        assert len(deliver_pending(now=later(91)).sent) == 1
        assert rows()[0].attempts == 3
        assert rows()[0].last_error is None  # `flask mail status` lists no error for it
        assert len(server.messages) == 1
    finally:
        server.stop()


def test_after_the_last_attempt_it_fails_and_retry_sends_it(manual_app, port, caplog):
    server = MailServer(port).start()
    server.handler.script = ['451 Try again later'] * 3
    try:
        queue_messages(1)
        deliver_pending()
        deliver_pending(now=later(31))
        with caplog.at_level(logging.ERROR):
            assert len(deliver_pending(now=later(200)).failed) == 1
        assert (rows()[0].status, rows()[0].attempts) == ('failed', 3)
        assert any(
            'user0@example.com' in record.getMessage() and record.levelno == logging.ERROR
            for record in caplog.records
        )
        assert deliver_pending(now=later(99999)).attempted == 0

        result = manual_app.test_cli_runner().invoke(args=['mail', 'retry'])
        assert '1 failed message(s) queued again.' in result.output
        assert (rows()[0].status, rows()[0].attempts) == ('pending', 0)
        assert len(deliver_pending().sent) == 1
        assert len(server.messages) == 1
    finally:
        server.stop()


def test_each_retry_and_the_giving_up_are_logged_as_an_admin_reads_them(manual_app, port, caplog):
    server = MailServer(port).start()
    server.handler.script = ['451 Try again later'] * 3
    try:
        queue_messages(1)
        (row,) = rows()
        with caplog.at_level(logging.WARNING):
            deliver_pending()
            deliver_pending(now=later(31))
            deliver_pending(now=later(200))
    finally:
        server.stop()
    start = f'Email {row.id} (delivery_test) to user0@example.com'
    answer = '451 Try again later'
    logged = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [(level, text) for level, text in logged if text.startswith(start)] == [
        (logging.WARNING, f'{start} not sent (attempt 1 of 3), retrying in 30 s: {answer}'),
        (logging.WARNING, f'{start} not sent (attempt 2 of 3), retrying in 60 s: {answer}'),
        (logging.ERROR, f'{start} failed after 3 attempt(s), giving up: {answer}'),
    ]


def test_a_message_that_cannot_be_built_fails_at_once_and_logs_its_traceback(manual_app, caplog):
    send_email(BROKEN_KIND, {'to': 'user0@example.com'}, recipient='user0@example.com')
    with caplog.at_level(logging.ERROR):
        assert len(deliver_pending().failed) == 1
    (row,) = rows()
    assert (row.status, row.attempts, row.recipient) == ('failed', 1, 'user0@example.com')
    (logged,) = [r for r in caplog.records if r.getMessage().startswith(f'Email {row.id} ')]
    assert logged.getMessage() == (
        f'Email {row.id} (broken_builder) to user0@example.com failed after 1 attempt(s), '
        'giving up: RuntimeError: builder bug for user0@example.com'
    )
    assert logged.levelno == logging.ERROR and isinstance(logged.exc_info[1], RuntimeError)


def test_an_error_is_stored_and_logged_whole_up_to_a_thousand_characters(manual_app, caplog):
    prefix = 'RuntimeError: builder bug for '
    for length in (1000, 1001):
        send_email(BROKEN_KIND, {'to': 'x' * (length - len(prefix))})
    with caplog.at_level(logging.ERROR):
        deliver_pending()
    whole, cut = rows()
    assert whole.last_error == prefix + 'x' * 970
    assert cut.last_error == prefix + 'x' * 969 + '…'
    logged = [record.getMessage() for record in caplog.records]
    assert sum(text.endswith(f'giving up: {whole.last_error}') for text in logged) == 1
    assert sum(text.endswith(f'giving up: {cut.last_error}') for text in logged) == 1


def test_an_unexpected_error_in_sending_fails_that_message_alone_on_a_new_connection(
    manual_app, port, monkeypatch, caplog
):
    send = Courier.send

    def choke_on_user1(courier, message, quiet):
        """The mail library raising what no SMTP error handler expects, for one message."""
        if message.recipients == ['user1@example.com']:
            raise ValueError('the mail library choked')
        return send(courier, message, quiet=quiet)

    monkeypatch.setattr(Courier, 'send', choke_on_user1)
    manual_app.config['MAIL_CONNECTIONS'] = 1
    for number in range(3):
        # Queued as typed; sent to the address the builder gives.
        data = {'to': f'user{number}@example.com', 'label': str(number)}
        send_email(TEST_KIND, data, recipient=f'User{number}@example.com')
    server = MailServer(port).start()
    try:
        with caplog.at_level(logging.ERROR):
            report = deliver_pending()
        assert server.handler.connections == 2  # the connection is not trusted after the error
    finally:
        server.stop()
    first, choked, last = rows()
    assert (report.sent, report.failed) == ([first.id, last.id], [choked.id])
    assert (choked.status, choked.attempts, choked.recipient, choked.last_error) == (
        'failed',
        1,
        'user1@example.com',
        'ValueError: the mail library choked',
    )
    (logged,) = [r for r in caplog.records if r.getMessage().startswith(f'Email {choked.id} ')]
    assert logged.levelno == logging.ERROR and isinstance(logged.exc_info[1], ValueError)


def test_the_worker_waits_for_retries_and_leases_but_not_for_messages_never_tried(manual_app):
    queue_messages(1)
    # Never tried: it woke the worker when it was stored, or waits for the worker's beat.
    assert next_retry_at() is None
    deliver_pending()  # nothing listens on the port: a retry in 30 s
    (row,) = rows()
    assert (row.attempts, next_retry_at()) == (1, row.next_attempt_at)
    # A sender that claims a message and dies: it is taken over when its lease runs out.
    manual_app.config['MAIL_CLAIM_TIMEOUT'] = 10
    queue_messages(1, prefix='claimed')
    (held,) = claim_due(utcnow(), 'a-sender-that-dies', 10)
    assert next_retry_at() == held.claimed_until < row.next_attempt_at


def test_permanent_refusal_fails_at_once(manual_app, port):
    server = MailServer(port).start()
    server.handler.script = ['550 No such mailbox']
    try:
        queue_messages(1)
        assert len(deliver_pending().failed) == 1
        row = rows()[0]
        assert (row.status, row.attempts) == ('failed', 1)
        assert '550 No such mailbox' in row.last_error
        deliver_pending(now=later(99999))
        assert server.handler.data_attempts == 1
    finally:
        server.stop()


def test_each_message_of_a_claim_gets_its_own_outcome(manual_app, port):
    # One connection, six messages: claims of three. The second is refused for good, and
    # the sent ones around it must not carry it along, nor it them.
    manual_app.config['MAIL_CONNECTIONS'] = 1
    server = MailServer(port).start()
    server.handler.script = ['250 Message accepted', '550 No such mailbox']
    try:
        queue_messages(6)
        report = deliver_pending()
    finally:
        server.stop()
    ids = [row.id for row in rows()]
    assert (report.sent, report.failed) == ([ids[0], *ids[2:]], [ids[1]])
    assert [(row.status, row.attempts) for row in rows()] == [('sent', 1)] + [('failed', 1)] + [
        ('sent', 1)
    ] * 4
    assert [row.last_error is not None for row in rows()] == [False, True] + [False] * 4
    assert len(server.messages) == 5


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    ('backoff', 'cap', 'delays'),
    [(1, 5, [1, 2, 4, 5, 5]), (30, 300, [30, 60, 120, 240, 300]), (0, 5, [1, 1])],
)
def test_retries_wait_twice_as_long_each_time_from_the_setting_up_to_its_cap(
    make_app, backoff, cap, delays
):
    # At least a second, so that one pass never tries a message twice.
    app = make_app(MAIL_RETRY_BACKOFF=backoff, MAIL_RETRY_BACKOFF_MAX=cap)
    with app.app_context():
        assert [backoff_seconds(attempts) for attempts in range(1, len(delays) + 1)] == delays


def test_dropped_connection_is_retried(manual_app, port):
    hang_up = HangUpServer(port).start()
    try:
        queue_messages(2)
        report = deliver_pending()
        assert len(report.retrying) == 2
        assert hang_up.accepted >= 1
        assert 'SMTPServerDisconnected' in rows()[0].last_error
    finally:
        hang_up.stop()
    server = MailServer(port).start()
    try:
        assert len(deliver_pending(now=later(31)).sent) == 2
    finally:
        server.stop()


def test_a_stale_claim_is_taken_over_and_a_live_one_is_left(manual_app, port):
    server = MailServer(port).start()
    try:
        queue_messages(2)
        stale, live = rows()
        db.session.execute(
            sa.update(OutboundEmail)
            .where(OutboundEmail.id == stale.id)
            .values(status='sending', claimed_by='dead:1', claimed_until=later(-1))
        )
        db.session.execute(
            sa.update(OutboundEmail)
            .where(OutboundEmail.id == live.id)
            .values(status='sending', claimed_by='alive:2', claimed_until=later(300))
        )
        db.session.commit()
        report = deliver_pending()
        assert report.sent == [stale.id]
        assert [row.status for row in rows()] == ['sent', 'sending']
    finally:
        server.stop()


@contextmanager
def other_worker(app):
    """A second worker's database session, beside the test's own (whose transaction stays open).

    On PostgreSQL it waits at most a second for a row lock, so that a claim that would
    block on the first worker's rows fails instead of hanging the test.
    """
    with app.app_context():
        try:
            if db.engine.dialect.name == 'postgresql':
                db.session.execute(sa.text("SET lock_timeout = '1s'"))
            yield
        finally:
            db.session.remove()


def holders():
    """Who holds each message, by id."""
    return {row.id: row.claimed_by for row in rows()}


def test_two_workers_claiming_at_once_never_take_the_same_message(manual_app):
    queue_messages(10)
    now = utcnow()
    ids = [row.id for row in rows()]
    # Worker A has read the first five due messages, and not yet marked them as its own...
    read_by_a = candidate_ids(now, 5)
    assert read_by_a == ids[:5]
    # ... when worker B claims five.
    with other_worker(manual_app):
        taken_by_b = [email.id for email in claim_due(now, 'B', 5)]
    taken_by_a = [email.id for email in take(read_by_a, now, 'A')]

    assert not set(taken_by_a) & set(taken_by_b)
    assert holders() == {
        **dict.fromkeys(ids),
        **dict.fromkeys(taken_by_a, 'A'),
        **dict.fromkeys(taken_by_b, 'B'),
    }
    if db.engine.dialect.name == 'postgresql':
        # Rows being claimed are skipped, not waited for: B took the next five.
        assert (taken_by_a, taken_by_b) == (ids[:5], ids[5:])
    else:
        # SQLite has no row locks: B took A's five, and A, checking again, took none.
        assert (taken_by_a, taken_by_b) == ([], ids[:5])


def test_a_message_of_a_kind_nobody_registered_is_refused_by_name_and_not_stored(manual_app):
    # A typo in a view's kind: the developer reads which, and the outbox stays clean.
    with pytest.raises(LookupError, match="^no kind of email is registered as 'pasword_reset'$"):
        send_email('pasword_reset', {'to': 'susan@example.com'}, recipient='susan@example.com')
    assert rows() == []


def test_the_messages_due_longest_are_claimed_first(manual_app):
    # After an outage more messages are due than one claim takes: those that have waited
    # longest go first, whatever order they were stored in, and ties go by id.
    queue_messages(4)
    now = utcnow()
    retry, waiting, tied, tied_later = rows()
    for row, since in ((retry, 1), (waiting, 180), (tied_later, 120), (tied, 120)):
        row.next_attempt_at = now - timedelta(seconds=since)
        db.session.commit()  # one at a time: the rows' order on disk is not their ids'
    order = [waiting.id, tied.id, tied_later.id, retry.id]
    assert candidate_ids(now, 4) == order
    assert [email.id for email in claim_due(now, 'A', 2)] == order[:2]


def test_an_expired_lease_passes_the_message_to_another_worker_for_good(manual_app):
    queue_messages(1)
    now = utcnow()
    (held_by_a,) = claim_due(now, 'A', 5)
    after_the_lease = held_by_a.claimed_until + timedelta(seconds=1)
    with other_worker(manual_app):
        (held_by_b,) = claim_due(after_the_lease, 'B', 5)
    assert held_by_b.id == held_by_a.id
    # A, back from a long stall, neither keeps the message nor writes its outcome.
    assert renew([held_by_a], after_the_lease, 'A') == []
    stalled = Sender(now, DeliveryReport())
    stalled.worker = 'A'
    stalled.failed(held_by_a, '421 try again later', permanent=False)
    row = rows()[0]
    assert (row.status, row.claimed_by, row.attempts, row.last_error) == ('sending', 'B', 0, None)
    assert renew([held_by_b], after_the_lease, 'B') != []


def test_renewing_extends_only_the_leases_the_worker_holds_and_was_given(manual_app):
    queue_messages(3)
    now = utcnow()
    first, second = claim_due(now, 'A', 2)
    (taken_by_b,) = claim_due(now, 'B', 1)
    renewal = now + timedelta(seconds=100)
    (renewed,) = renew([first, taken_by_b], renewal, 'A')
    assert renewed.id == first.id
    lease = timedelta(seconds=manual_app.config['MAIL_CLAIM_TIMEOUT'])
    assert renewed.claimed_until == renewal + lease
    leases = {row.id: row.claimed_until for row in rows()}
    assert leases == {
        first.id: renewed.claimed_until,
        second.id: second.claimed_until,
        taken_by_b.id: taken_by_b.claimed_until,
    }


def test_a_kind_is_registered_as_declared_with_its_defaults(monkeypatch):
    monkeypatch.setattr(kinds, '_kinds', {})

    def build(data):
        """A builder that is never called."""

    declared = kinds.email_kind(
        'notice', subject='A notice', wake=False, expires=True, template='shared'
    )
    assert declared(build) is build
    assert kinds.email_kind('plain', subject='Plain')(build) is build
    assert kinds.get_kind('notice') == kinds.Kind(
        'notice', 'A notice', build, wake=False, expires=True, template='shared'
    )
    plain = kinds.get_kind('plain')
    assert plain == kinds.Kind('plain', 'Plain', build, wake=True, expires=False, template=None)
    assert kinds.get_kind('notice').templates == ('email/shared.txt', 'email/shared.html')
    assert plain.templates == ('email/plain.txt', 'email/plain.html')
    assert kinds.get_kind('missing') is None


def refused(*codes):
    """The error smtplib raises when the server refuses every recipient, one code each."""
    return smtplib.SMTPRecipientsRefused(
        {f'user{n}@example.com': (code, b'no') for n, code in enumerate(codes)}
    )


@pytest.mark.parametrize(
    ('error', 'permanent'),
    [
        (smtplib.SMTPDataError(550, b'No such mailbox'), True),
        (smtplib.SMTPDataError(500, b'Syntax error'), True),
        (smtplib.SMTPDataError(599, b'Never'), True),
        (smtplib.SMTPDataError(451, b'Try later'), False),
        (smtplib.SMTPDataError(600, b'Not an SMTP code'), False),
        (refused(550), True),
        (refused(500, 599), True),
        (refused(550, 450), False),
        (refused(450), False),
        (refused(600), False),
        (refused(), False),
        (smtplib.SMTPServerDisconnected('gone'), False),
        (smtplib.SMTPResponseException(554, b'Transaction failed'), False),
    ],
)
def test_only_a_5xx_answer_about_the_message_gives_it_up(error, permanent):
    assert is_permanent(error) is permanent


@pytest.mark.parametrize(
    ('error', 'closes'),
    [
        (refused(550, 421), True),
        (refused(550, 450), False),
        (smtplib.SMTPDataError(421, b'Closing'), True),
        (smtplib.SMTPDataError(451, b'Try later'), False),
        (ConnectionResetError('reset'), False),
    ],
)
def test_a_421_anywhere_in_the_answer_means_the_server_hung_up(error, closes):
    assert closes_connection(error) is closes


@pytest.mark.parametrize(
    ('error', 'text'),
    [
        (refused(550, 421), 'user0@example.com: 550 no; user1@example.com: 421 no'),
        (smtplib.SMTPDataError(451, 'Try later'), '451 Try later'),
        (smtplib.SMTPDataError(554, 'Refus\xe9'.encode('latin-1')), '554 Refus\ufffd'),
        (ConnectionResetError('reset by peer'), 'ConnectionResetError: reset by peer'),
    ],
)
def test_an_error_is_described_on_one_line_as_an_admin_reads_it(error, text):
    assert describe(error) == text


def test_status_and_send_pending_commands(manual_app, port):
    queue_messages(2)
    runner = manual_app.test_cli_runner()
    result = runner.invoke(args=['mail', 'send-pending'])
    assert 'sent 0, to retry 2, failed 0, dropped 0' in result.output
    output = runner.invoke(args=['mail', 'status']).output
    assert f'server   127.0.0.1:{port} (plain)' in output
    assert 'backend  none (stored only: cron runs `flask mail send-pending`)' in output
    assert 'pending  2' in output
    oldest = 'oldest waiting: #1 delivery_test to user0@example.com, queued 0 s ago, 1 attempt(s)'
    assert oldest in output
    assert re.search(r'next retry: \S+ \S+ UTC \(in (29|30) s\)', output), output
    assert 'user1@example.com: ConnectionRefusedError' in output

    server = MailServer(port).start()
    try:
        # Still waiting out the backoff: a plain pass sends nothing, --now sends it all.
        assert 'sent 0, to retry 0' in runner.invoke(args=['mail', 'send-pending']).output
        result = runner.invoke(args=['mail', 'send-pending', '--now'])
        assert '2 message(s) waiting for a retry made due now.' in result.output
        assert 'sent 2, to retry 0, failed 0, dropped 0' in result.output
        assert len(server.messages) == 2
        output = runner.invoke(args=['mail', 'status']).output
        assert 'sent     2' in output and 'next retry' not in output
    finally:
        server.stop()


@pytest.fixture
def thread_app(make_app, port):
    """An app with the default in-process delivery worker, sending to 127.0.0.1:<port>."""
    return make_app(MAIL_SUPPRESS_SEND=False, MAIL_SERVER='127.0.0.1', MAIL_PORT=port)


def delivery_threads():
    return [t for t in threading.enumerate() if t.name == 'microblog-mail-delivery']


# A script's start: an app on the database of argv[1], sending to the server on argv[2].
APP_SCRIPT = """
import os
import sys
import time

import sqlalchemy as sa

from app import create_app, db
from app.mail import send_email
from app.models import OutboundEmail
from tests.helpers import TestConfig
from tests.kinds import TEST_KIND


class Settings(TestConfig):
    SQLALCHEMY_DATABASE_URI = sys.argv[1]
    MAIL_SUPPRESS_SEND = False
    MAIL_SERVER = '127.0.0.1'
    MAIL_PORT = int(sys.argv[2])


app = create_app(Settings)
with app.app_context():
    db.create_all()
"""

LAST_PASS = (
    APP_SCRIPT
    + """\
    send_email(TEST_KIND, {'to': 'user0@example.com', 'label': 'last words'})
    # The process ends while its worker is sending (the server answers DATA slowly).
    deadline = time.monotonic() + 30
    while db.session.scalar(sa.select(OutboundEmail.status)) != OutboundEmail.SENDING:
        assert time.monotonic() < deadline, 'the worker never took the message'
        db.session.rollback()
        time.sleep(0.05)
"""
)


class SlowDataHandler(RecordingHandler):
    """Takes two seconds to answer DATA, as a loaded server does."""

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        await asyncio.sleep(2)
        return await super().handle_DATA(server, session, envelope)


def run_python(script, *args):
    """Run ``script`` in a Python process of its own, with ``args``; what it did."""
    return subprocess.run(
        [sys.executable, '-c', script, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.sqlite_only
def test_a_process_that_ends_finishes_its_pass_first_and_then_ends(tmp_path, port):
    server = MailServer(port)
    server.handler = SlowDataHandler()
    server.start()
    url = f'sqlite:///{tmp_path / "ending.db"}'
    try:
        # The worker thread neither keeps the process alive (it is a daemon) nor is cut
        # off in the middle of a message (the process stops it and waits for its pass).
        ended = run_python(LAST_PASS, url, port)
    finally:
        server.stop()
    assert ended.returncode == 0, ended.stderr
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        assert connection.scalar(sa.select(OutboundEmail.status)) == OutboundEmail.SENT
    engine.dispose()
    assert [label_of(received) for received in server.messages] == ['last words']


def test_a_message_that_wakes_the_worker_goes_out_at_once(make_app, port):
    # Its beat (MAIL_POLL_INTERVAL) is a minute away: only the wake sends it sooner.
    app = make_app(MAIL_SUPPRESS_SEND=False, MAIL_SERVER='127.0.0.1', MAIL_PORT=port)
    server = MailServer(port).start()
    try:
        app.test_client().get('/login')  # the first request starts the worker
        with app.app_context():
            app.extensions['mail_delivery'].flush()  # its first pass is over
            send_email(TEST_KIND, {'to': 'user0@example.com', 'label': 'at once'})
        received = server.wait_for(lambda received: label_of(received) == 'at once')
        assert received.rcpt_tos == ['user0@example.com']
    finally:
        server.stop()


def test_a_message_that_does_not_wake_the_worker_goes_out_on_its_next_beat(
    make_app, port, monkeypatch
):
    monkeypatch.setattr(kinds, '_kinds', dict(kinds._kinds))
    kinds.email_kind('on_the_beat', subject='[Microblog] On the beat', template='test', wake=False)(
        build_delivery_test
    )
    app = make_app(
        MAIL_SUPPRESS_SEND=False, MAIL_SERVER='127.0.0.1', MAIL_PORT=port, MAIL_POLL_INTERVAL=1
    )
    server = MailServer(port).start()
    try:
        app.test_client().get('/login')  # the first request starts the worker
        with app.app_context():
            send_email('on_the_beat', {'to': 'user0@example.com', 'label': 'the next beat'})
        # Not woken, the worker still takes it on its own beat, about a second away.
        received = server.wait_for(lambda received: label_of(received) == 'the next beat')
        assert received.rcpt_tos == ['user0@example.com']
    finally:
        server.stop()


def test_the_thread_worker_wakes_for_a_retry_when_it_falls_due(make_app, port, caplog):
    # Its beat (MAIL_POLL_INTERVAL) is a minute away; the retry is due in a second.
    app = make_app(
        MAIL_SUPPRESS_SEND=False, MAIL_SERVER='127.0.0.1', MAIL_PORT=port, MAIL_RETRY_BACKOFF=1
    )
    with app.app_context():
        # The worker is started, and has been through the empty outbox, before the message.
        app.extensions['mail_delivery'].flush()
        caplog.clear()
        queue_messages(1)
        app.extensions['mail_delivery'].flush()  # a whole pass: the server is not up yet
        assert [(row.status, row.attempts) for row in rows()] == [('pending', 1)]
    server = MailServer(port).start()
    try:
        received = server.wait_for(lambda received: label_of(received) == 'message 0')
        assert received.rcpt_tos == ['user0@example.com']
    finally:
        server.stop()
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_stopping_the_thread_worker_ends_its_thread_and_waits_for_it(make_app, port):
    before = set(delivery_threads())
    app = make_app(MAIL_SUPPRESS_SEND=False, MAIL_SERVER='127.0.0.1', MAIL_PORT=port)
    backend = app.extensions['mail_delivery']
    backend.start()
    [thread] = set(delivery_threads()) - before
    backend.stop()
    assert not thread.is_alive()


def test_waiting_for_a_pass_that_does_not_end_gives_up_at_the_limit_and_says_so(
    make_app, monkeypatch
):
    # A pass held up (by a server that never answers, say) does not hang whoever waits.
    held = threading.Event()
    monkeypatch.setattr(workers, 'deliver_pending', lambda: held.wait(5))
    backend = make_app().extensions['mail_delivery']
    try:
        with pytest.raises(TimeoutError, match='^email delivery did not finish a pass in time$'):
            backend.flush(timeout=0.5)
    finally:
        held.set()


def test_a_failed_pass_is_logged_and_the_worker_goes_on(make_app, monkeypatch, caplog):
    passes = []
    again = threading.Event()

    def fails_once():
        passes.append('pass')
        if len(passes) == 1:
            raise RuntimeError('the database went away')
        again.set()

    monkeypatch.setattr(workers, 'deliver_pending', fails_once)
    backend = make_app(MAIL_POLL_INTERVAL=2).extensions['mail_delivery']
    with caplog.at_level(logging.ERROR):
        backend.start()
        # Not woken, it tries again on its own (within its beat, at most 5 s).
        assert again.wait(30), 'the worker never ran another pass'
    [error] = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert error.getMessage() == 'Email delivery pass failed'
    assert 'the database went away' in caplog.text  # with its traceback


def test_between_passes_the_worker_rests(make_app, monkeypatch):
    passes = []
    monkeypatch.setattr(workers, 'deliver_pending', lambda: passes.append('pass'))
    backend = make_app().extensions['mail_delivery']
    backend.flush()
    done = len(passes)
    # Its beat is a minute away and nothing wakes it: for this half second it runs no pass
    # (a worker that never rests would run one after another against the database).
    threading.Event().wait(0.5)
    assert len(passes) == done


def test_stopping_waits_for_a_pass_as_long_as_a_message_takes_and_no_longer(make_app, monkeypatch):
    # A process that ends waits for the message being sent (cut off, it would go out again
    # once its lease ran out), but a pass held up by a server that never answers does not
    # keep it from ending: it waits MAIL_TIMEOUT + 5 s, then goes.
    started, held = threading.Event(), threading.Event()

    def held_up():
        started.set()
        held.wait(30)

    monkeypatch.setattr(workers, 'deliver_pending', held_up)
    before = set(delivery_threads())
    backend = make_app(MAIL_TIMEOUT=1).extensions['mail_delivery']
    backend.start()
    [thread] = set(delivery_threads()) - before
    assert started.wait(30)
    try:
        began = time.monotonic()
        backend.stop()
        assert time.monotonic() - began >= 1 + 5
        assert thread.is_alive()
    finally:
        held.set()
        thread.join(30)


FORKED = (
    APP_SCRIPT
    + """\
    app.extensions['mail_delivery'].flush()  # the worker runs, waiting for its next pass
    child = os.fork()
    if child == 0:
        # As a server that forks its workers after making the app: the thread stayed behind.
        db.engine.dispose(close=False)
        send_email(TEST_KIND, {'to': 'user0@example.com', 'label': 'from the child'})
        app.extensions['mail_delivery'].flush()
        sent = db.session.scalar(sa.select(OutboundEmail.status)) == OutboundEmail.SENT
        os._exit(0 if sent else 3)
    sys.exit(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))
"""
)


@pytest.mark.sqlite_only
def test_a_forked_process_starts_a_worker_of_its_own(tmp_path, port):
    server = MailServer(port).start()
    try:
        forked = run_python(FORKED, f'sqlite:///{tmp_path / "forked.db"}', port)
    finally:
        server.stop()
    assert forked.returncode == 0, forked.stderr
    assert [label_of(received) for received in server.messages] == ['from the child']


def test_thread_worker_is_one_thread_whatever_the_burst(thread_app, port):
    server = MailServer(port).start()
    try:
        client = thread_app.test_client()
        before = threading.active_count()
        for number in range(50):
            client.post('/reset_password_request', data={'email': f'n{number}@example.com'})
        assert len(delivery_threads()) == 1
        assert threading.active_count() <= before + 1
        with thread_app.app_context():
            queue_messages(10)
        thread_app.extensions['mail_delivery'].flush()
        assert len(server.messages) == 10
    finally:
        server.stop()
    thread_app.extensions['mail_delivery'].stop()
    assert delivery_threads() == []


def test_thread_worker_logs_a_failure_with_the_recipient(thread_app, caplog):
    with caplog.at_level(logging.WARNING), thread_app.app_context():
        queue_messages(1)
        thread_app.extensions['mail_delivery'].flush()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any('user0@example.com' in text and 'ConnectionRefused' in text for text in warnings)


def test_a_new_process_delivers_what_a_stopped_one_left(make_app, port):
    first = make_app(MAIL_SUPPRESS_SEND=False, MAIL_SERVER='127.0.0.1', MAIL_PORT=port)
    with first.app_context():
        queue_messages(5)
        first.extensions['mail_delivery'].flush()
    first.extensions['mail_delivery'].stop()
    with first.app_context():
        assert [row.status for row in rows()] == ['pending'] * 5
        db.session.execute(sa.update(OutboundEmail).values(next_attempt_at=later(-1)))
        db.session.commit()

    server = MailServer(port).start()
    try:
        second = make_app(
            create_tables=False, MAIL_SUPPRESS_SEND=False, MAIL_SERVER='127.0.0.1', MAIL_PORT=port
        )
        second.test_client().get('/login')  # the first request starts the worker
        second.extensions['mail_delivery'].flush()
        assert len(server.messages) == 5
        with second.app_context():
            assert {row.status for row in rows()} == {'sent'}
    finally:
        server.stop()


@pytest.fixture
def rq_app(make_app, port):
    """An app whose email goes through RQ, on a queue of its own in the test Redis."""
    if not TEST_REDIS_URL:
        pytest.skip('TEST_REDIS_URL is not set: the RQ tests need a Redis server')
    from redis import Redis
    from rq import Queue

    name = f'test-mail-{uuid.uuid4().hex[:8]}'
    app = make_app(
        MAIL_SUPPRESS_SEND=False,
        MAIL_SERVER='127.0.0.1',
        MAIL_PORT=port,
        MAIL_QUEUE='rq',
        REDIS_URL=TEST_REDIS_URL,
        MAIL_RQ_QUEUE=name,
    )
    connection = Redis.from_url(TEST_REDIS_URL)
    queue = Queue(name, connection=connection)
    app.rq_queue = queue
    yield app
    for registry in (queue.scheduled_job_registry, queue.failed_job_registry):
        for job_id in registry.get_job_ids():
            registry.remove(job_id, delete_job=True)
    queue.delete(delete_jobs=True)
    connection.close()


def run_worker(app):
    from rq import SimpleWorker

    with app.app_context():
        worker = SimpleWorker([app.rq_queue], connection=app.rq_queue.connection)
        worker.work(burst=True, with_scheduler=False)


def run_scheduled(app):
    """Move every scheduled pass into the queue now, as RQ's scheduler will when it is due."""
    from rq.job import Job

    registry = app.rq_queue.scheduled_job_registry
    for job_id in registry.get_job_ids():
        registry.remove(job_id)
        app.rq_queue.enqueue_job(Job.fetch(job_id, connection=app.rq_queue.connection))


def test_rq_delivers_a_reset_email_end_to_end(rq_app, port, make_user):
    with rq_app.app_context():
        make_user('susan')
    server = MailServer(port).start()
    try:
        client = rq_app.test_client()
        # Compared with the threads before: another app in this process (an earlier
        # test's, or one made under `mutmut run`, which create_app takes for `flask run`)
        # may run one.
        threads = delivery_threads()
        for _ in range(3):
            client.post('/reset_password_request', data={'email': 'susan@example.com'})
        assert delivery_threads() == threads  # the web process starts no delivery thread
        # A reset request enqueues nothing now: one pass waits for the next cadence tick,
        # however many requests came.
        assert rq_app.rq_queue.count == 0
        assert rq_app.rq_queue.scheduled_job_registry.count == 1
        run_scheduled(rq_app)
        run_worker(rq_app)
        assert [received.rcpt_tos for received in server.messages] == [['susan@example.com']] * 3
        # The pass, with nothing left to retry, ended without an error.
        assert rq_app.rq_queue.failed_job_registry.count == 0
        assert 'Dear susan' in server.messages[0].part('text/plain')
    finally:
        server.stop()


def test_rq_retries_when_the_server_comes_back(rq_app, port):
    with rq_app.app_context():
        queue_messages(3)
        run_worker(rq_app)
        assert [row.status for row in rows()] == ['pending'] * 3
        # the worker scheduled the next pass for when the retry is due
        assert len(rq_app.rq_queue.scheduled_job_registry.get_job_ids()) >= 1
        db.session.execute(sa.update(OutboundEmail).values(next_attempt_at=later(-1)))
        db.session.commit()
    server = MailServer(port).start()
    try:
        rq_app.extensions['mail_delivery'].notify(wake=True)
        run_worker(rq_app)
        assert len(server.messages) == 3
    finally:
        server.stop()


def test_rq_worker_command_uses_the_app(rq_app, port):
    server = MailServer(port).start()
    try:
        with rq_app.app_context():
            queue_messages(2)
        result = rq_app.test_cli_runner().invoke(args=['mail', 'worker', '--burst'])
        assert result.exit_code == 0, result.output
        assert len(server.messages) == 2
    finally:
        server.stop()


def at(seconds):
    return datetime.fromtimestamp(seconds, UTC)


@pytest.mark.parametrize(
    ('poll', 'asked', 'due'),
    [
        # Ticks are whole multiples of MAIL_POLL_INTERVAL: one pass a tick, at the first
        # tick after the time asked.
        (60, [1_000_000_030.5, 1_000_000_079.9, 1_000_000_080], [1_000_000_080, 1_000_000_140]),
        # An interval under a second is a second.
        (0, [1_000_000_030.5, 1_000_000_030.9, 1_000_000_031], [1_000_000_031, 1_000_000_032]),
    ],
)
def test_a_pass_is_scheduled_once_at_the_first_tick_after_the_time_asked(rq_app, poll, asked, due):
    rq_app.config['MAIL_POLL_INTERVAL'] = poll
    backend = rq_app.extensions['mail_delivery']
    for seconds in asked:
        backend.schedule(at(seconds))
    registry = rq_app.rq_queue.scheduled_job_registry
    scheduled = {job_id: registry.get_scheduled_time(job_id) for job_id in registry.get_job_ids()}
    name = rq_app.rq_queue.name
    assert scheduled == {f'{name}-pass-{seconds // max(poll, 1)}': at(seconds) for seconds in due}


@pytest.mark.parametrize('wake', [True, False])
def test_a_pass_job_runs_the_delivery_with_time_for_every_batch(rq_app, wake):
    config = rq_app.config
    with rq_app.app_context():
        rq_app.extensions['mail_delivery'].notify(wake=wake)
    queue = rq_app.rq_queue
    job_ids = queue.job_ids if wake else queue.scheduled_job_registry.get_job_ids()
    [job] = [queue.fetch_job(job_id) for job_id in job_ids]
    assert job.func_name == 'app.mail.workers.run_delivery_job'
    # A job killed mid-pass would leave a message sent but not recorded (sent again
    # once its lease runs out): the pass has time for ten batches at MAIL_TIMEOUT each.
    assert job.timeout >= 10 * config['MAIL_BATCH_SIZE'] * config['MAIL_TIMEOUT']
    # No result is kept in Redis; a failed pass stays a day in RQ's failed registry.
    assert (job.result_ttl, job.failure_ttl) == (0, 86400)


def test_a_message_stored_while_redis_is_down_stays_pending_and_says_why(make_app, caplog):
    port = free_port()
    app = make_app(MAIL_QUEUE='rq', REDIS_URL=f'redis://127.0.0.1:{port}/0')
    with app.app_context(), caplog.at_level(logging.WARNING):
        send_email(TEST_KIND, {'to': 'user0@example.com', 'label': 'one'})
        assert [row.status for row in rows()] == ['pending']
    [warning] = [record for record in caplog.records if record.levelno == logging.WARNING]
    message = warning.getMessage()
    assert message.startswith('Could not enqueue email delivery (')
    assert f'127.0.0.1:{port}' in message
    assert message.endswith('); it stays pending')


def test_a_plain_rq_worker_makes_one_app_for_all_its_jobs(make_app, port, monkeypatch):
    # `rq worker` runs jobs with no app context: the job makes the app, once a process.
    made = []

    def create_app():
        made.append(
            make_app(
                MAIL_SUPPRESS_SEND=False, MAIL_SERVER='127.0.0.1', MAIL_PORT=port, MAIL_QUEUE='none'
            )
        )
        return made[-1]

    monkeypatch.setattr('app.create_app', create_app)
    monkeypatch.setattr(workers, '_worker_app', None)
    server = MailServer(port).start()
    try:
        with create_app().app_context():
            queue_messages(2)
        made.clear()
        assert workers.run_delivery_job() == {'sent': 2, 'retrying': 0, 'failed': 0, 'dropped': 0}
        assert workers.run_delivery_job() == {'sent': 0, 'retrying': 0, 'failed': 0, 'dropped': 0}
        assert len(made) == 1
        assert len(server.messages) == 2
    finally:
        server.stop()
