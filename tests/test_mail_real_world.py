"""Email in the real world: international and hostile addresses, poison messages, long
outages, no secrets at rest, claim guards, parallel senders and the admin's controls.

Every test sends to a real SMTP server (aiosmtpd) on 127.0.0.1.
"""

import asyncio
import logging
import re
import runpy
import threading
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import app.models
from app import db
from app.addresses import UndeliverableAddressError, smtp_address
from app.mail import deliver_pending, kinds, queue_email, send_email
from app.mail.outbox import DeliveryReport, Sender, candidate_ids, claim_due, take
from app.mail.smtp import Courier
from app.models import OutboundEmail, User, utcnow
from tests.helpers import PASSWORD, links_in
from tests.kinds import BROKEN_KIND, TEST_KIND, build_delivery_test
from tests.mailserver import MailServer, free_port

NEW_PASSWORD = 'quiet-Meadow-lantern-42'
# An RFC 2047 encoded word that decodes to CR LF 'bcc: x@evil.com', at a long domain.
POISON = '=?utf-8?b?YQ0KYmNjOiB4QGV2aWwuY29t?=@' + 'a' * 38 + '.' + 'b' * 38 + '.com'


@pytest.fixture
def port():
    """A free port for the SMTP server."""
    return free_port()


@pytest.fixture
def server(port):
    """A real SMTP server on 127.0.0.1 that keeps what it receives."""
    server = MailServer(port).start()
    yield server
    server.stop()


@pytest.fixture
def mail_app(make_app, port):
    """An app that sends to the test SMTP server, delivering only when the test runs a pass."""
    app = make_app(
        MAIL_SUPPRESS_SEND=False, MAIL_SERVER='127.0.0.1', MAIL_PORT=port, MAIL_QUEUE='none'
    )
    with app.app_context():
        yield app


def add_user(username, email):
    """An account with ``email`` stored as given, as an older version may have stored it."""
    user = User(username=username, email=email)
    user.set_password(PASSWORD)
    db.session.add(user)
    db.session.commit()
    return user


def request_reset(app, address):
    response = app.test_client().post('/reset_password_request', data={'email': address})
    assert response.status_code == 302
    return response


def outbox_rows():
    db.session.expire_all()
    return db.session.scalars(sa.select(OutboundEmail).order_by(OutboundEmail.id)).all()


def reset_link(received):
    links = [link for link in links_in(received.part('text/plain')) if '/reset_password/' in link]
    assert len(links) == 1
    return links[0].split('https://microblog.example.com', 1)[1]


def set_new_password(app, path, username):
    """Follow a reset link and set a new password; whether the login with it then works."""
    client = app.test_client()
    assert client.get(path).headers['Location'] == '/reset_password'
    client.post('/reset_password', data={'password': NEW_PASSWORD, 'password2': NEW_PASSWORD})
    login = client.post('/login', data={'username': username, 'password': NEW_PASSWORD})
    client.post('/logout')  # the app context, and so the login, outlives this client
    return login.status_code == 302 and login.headers['Location'] == '/index'


# Addresses


@pytest.mark.parametrize(
    ('stored', 'typed', 'rcpt'),
    [
        # Python's idna codec (IDNA 2003) maps ß to ss: another domain, another owner.
        ('hans@straße.de', 'hans@straße.de', 'hans@xn--strae-oqa.de'),
        ('hans@straße.de', 'HANS@STRAẞE.DE', 'hans@xn--strae-oqa.de'),
        ('hans@straße.de', 'Hans@xn--strae-oqa.de', 'hans@xn--strae-oqa.de'),
        # ... and final sigma to sigma (xn--kxae4bpq).
        ('nikos@ςοφία.gr', 'NIKOS@ςοφία.GR', 'nikos@xn--kxae4blv.gr'),
        # SQLite's lower() folds ASCII only.
        ('anne@école.fr', 'ANNE@ÉCOLE.FR', 'anne@xn--cole-9oa.fr'),
        ('Susan.Smith@example.com', 'susan.smith@ＥＸＡＭＰＬＥ.com', 'Susan.Smith@example.com'),
        ('susan@example.com', ' susan@example.com\n', 'susan@example.com'),
    ],
)
def test_the_reset_email_reaches_exactly_the_stored_address(mail_app, server, stored, typed, rcpt):
    add_user('hans', stored)
    request_reset(mail_app, typed)
    assert len(deliver_pending().sent) == 1
    assert [received.rcpt_tos for received in server.messages] == [[rcpt]]
    assert server.messages[0].message['To'] == rcpt
    assert outbox_rows()[0].recipient == stored


@pytest.mark.parametrize('answer', [None, '451 Try again later'])  # None: the server is down
def test_a_reset_email_that_must_wait_names_the_stored_address_to_the_admin(
    mail_app, port, caplog, answer
):
    add_user('hans', 'hans@straße.de')
    request_reset(mail_app, 'HANS@STRAẞE.DE')
    assert outbox_rows()[0].recipient == 'HANS@straße.de'  # as typed, until it is built
    server = MailServer(port).start() if answer else None
    try:
        if server:
            server.handler.script = [answer]
        with caplog.at_level(logging.WARNING):
            assert len(deliver_pending().retrying) == 1
    finally:
        if server:
            server.stop()
    row = outbox_rows()[0]
    assert row.recipient == 'hans@straße.de'  # as `flask mail status` shows it
    logged = [record.getMessage() for record in caplog.records]
    assert any(
        text.startswith(f'Email {row.id} (reset_password) to hans@straße.de ') for text in logged
    )


def test_the_sender_of_an_international_domain_goes_out_in_ascii(make_app, port, server):
    # In the envelope and in From:, with its display name kept.
    app = make_app(
        MAIL_SUPPRESS_SEND=False,
        MAIL_SERVER='127.0.0.1',
        MAIL_PORT=port,
        MAIL_QUEUE='none',
        MAIL_DEFAULT_SENDER='Microblog <no-reply@straße.de>',
    )
    with app.app_context():
        send_email(TEST_KIND, {'to': 'susan@example.com', 'label': 'one'})
        assert len(deliver_pending().sent) == 1
    [received] = server.messages
    assert received.mail_from == 'no-reply@xn--strae-oqa.de'
    assert received.message['From'] == 'Microblog <no-reply@xn--strae-oqa.de>'


@pytest.mark.parametrize(
    'typed',
    ['hans@strasse.de', 'hans@xn--strasse.de', 'hans@xn--strae-oqa.com', 'hans@stra\u00dfe.com'],
)
def test_a_look_alike_domain_finds_no_account(mail_app, server, typed):
    add_user('hans', 'hans@straße.de')
    request_reset(mail_app, typed)
    report = deliver_pending()
    assert report.sent == [] and server.messages == []
    assert [row.status for row in outbox_rows()] == ['dropped'] * len(report.dropped)


def register(client, email, username='newcomer'):
    data = {'username': username, 'email': email, 'password': PASSWORD, 'password2': PASSWORD}
    return client.post('/register', data=data)


NOT_ASCII = (
    'We cannot send email to an address with letters outside A to Z before the @-sign. '
    'Please use another address.'
)


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    ('email', 'message'),
    [
        ('Émile@example.com', NOT_ASCII),
        ('用户@例子.广告', NOT_ASCII),
        (POISON, 'reads as an encoded header word'),
        ('=?utf-8?q?admin?=@example.com', 'reads as an encoded header word'),
        ('x=?utf-8?b?ZXZpbEBhdHRhY2tlci5jb20=?=@example.com', 'reads as an encoded header word'),
        ('x=?utf-8?q?=0D=0A?=@example.com', 'reads as an encoded header word'),
        ('"quoted"@example.com', 'Quoting the part before the @-sign is not allowed'),
        ('a@' + 'b' * 64 + '.com', 'periods cannot be separated by so many characters'),
        ('susan@example.com\n', None),
        # Long enough that the To header is folded onto two lines, which is allowed.
        ('x' * 60 + '@' + 'y' * 40 + '.example.com', None),
        # NFC composes each e + combining accent into one character: 119 typed, 60 stored.
        ('e\u0301' * 0 + 'x@' + 'e\u0301' * 55 + '.com', None),
    ],
)
def test_registration_refuses_what_mail_cannot_reach(mail_app, email, message):
    client = mail_app.test_client()
    response = register(client, email)
    assert response.status_code in (200, 302)
    if message is None:
        assert response.status_code == 302
        assert db.session.scalar(sa.select(User.email)) == email.strip().replace(
            'e\u0301', '\u00e9'
        )
    else:
        assert response.status_code == 200
        assert message in response.text
        assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 0


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    ('email', 'language', 'message'),
    [
        # email-validator's English, reworded where it reads like a parser's.
        ('a b@example.com', 'en', 'The email address contains a space before the @-sign.'),
        ('"quoted"@example.com', 'en', 'Quoting the part before the @-sign is not allowed'),
        # Its common messages, and ours, translated; any other says only "not valid".
        ('nope', 'zh-CN', '邮箱地址必须包含 @ 符号。'),
        ('Émile@example.com', 'zh-CN', '@ 之前含有 A 到 Z 以外字母的地址无法接收我们的邮件'),
        ('=?utf-8?q?admin?=@example.com', 'zh-CN', '@ 之前的部分会被解读为编码过的邮件头'),
        ('"quoted"@example.com', 'zh-CN', '这不是有效的邮箱地址。'),
    ],
)
def test_registration_says_what_is_wrong_with_an_address_in_the_readers_language(
    mail_app, email, language, message
):
    client = mail_app.test_client()
    client.environ_base['HTTP_ACCEPT_LANGUAGE'] = language
    response = register(client, email)
    assert response.status_code == 200
    assert message in response.text
    assert 'characters before the @-sign: SPACE' not in response.text


def test_an_address_of_the_longest_length_smtp_takes_is_sent(mail_app, server):
    # RFC 5321: 256 octets for the path, angle brackets included.
    longest = 'x' * 64 + '@' + 'a' * 63 + '.' + 'b' * 63 + '.' + 'c' * 57 + '.com'
    assert len(longest) == 254
    send_email(TEST_KIND, {'to': longest, 'label': 'longest'})
    assert len(deliver_pending().sent) == 1
    assert [received.rcpt_tos for received in server.messages] == [[longest]]


@pytest.mark.sqlite_only
def test_an_address_longer_than_smtp_takes_once_its_domain_is_encoded_is_refused(mail_app):
    """Short as typed, too long as sent: each label of the domain grows as IDNA encodes it."""
    # 'ü' * 27 is a label of 27 characters; encoded, 'xn--tdaaaa…' of 35.
    label = '\u00fc' * 27
    email = 'x' * 64 + '@' + '.'.join([label] * 6) + '.de'
    ascii_form = 'x' * 64 + '@' + '.'.join([label.encode('idna').decode()] * 6) + '.de'
    assert len(email) <= 254 < len(ascii_form)
    with pytest.raises(UndeliverableAddressError):
        smtp_address(email)
    response = register(mail_app.test_client(), email)
    assert response.status_code == 200
    assert db.session.scalar(sa.select(User).where(User.username == 'newcomer')) is None


@pytest.mark.sqlite_only
def test_an_address_nfc_lengthens_past_the_column_gets_a_message(mail_app):
    # U+FB2C (a Hebrew presentation form) decomposes and NFC does not recompose it: 3x longer.
    email = 'x@' + '\ufb2c' * 40 + '.com'
    assert len(email) <= 120
    response = register(mail_app.test_client(), email)
    assert response.status_code == 200
    assert (
        'Use an address of at most 120 characters.' in response.text
        or 'The part after the @-sign' in response.text
    )


@pytest.mark.parametrize(
    'other', ['HANS@STRAßE.DE', 'hans@xn--strae-oqa.de', 'Hans@Straße.de', 'hans@ＳＴＲＡＳＳＥ.de']
)
def test_one_mailbox_one_account_however_it_is_written(mail_app, other):
    add_user('hans', 'hans@straße.de')
    response = register(mail_app.test_client(), other)
    assert response.status_code == 302  # the same answer either way: the form never tells
    made = db.session.scalar(sa.select(User).where(User.username == 'newcomer'))
    if other.lower().endswith('ｓｔｒａｓｓｅ.de'.lower()):
        assert made is not None  # strasse.de is another domain
    else:
        assert made is None


@pytest.mark.parametrize(
    ('email', 'key'),
    [
        ('Hans@Straße.DE', 'hans@xn--strae-oqa.de'),
        # Stored by an older version, before registration refused such addresses.
        ('Émile@Example.com', 'émile@example.com'),
    ],
)
def test_an_accounts_key_is_the_one_databases_already_hold(mail_app, email, key):
    # The migration that added the column stored every account's key in this form:
    # a key computed any other way finds none of the accounts made before it.
    assert add_user('hans', email).email_key == key


def test_the_database_refuses_a_second_account_for_one_mailbox(mail_app):
    add_user('hans', 'hans@straße.de')
    db.session.add(User(username='other', email='HANS@xn--strae-oqa.de'))
    with pytest.raises(sa.exc.IntegrityError):
        db.session.commit()
    db.session.rollback()


# Poison messages


def test_a_subject_with_a_line_break_fails_its_message_and_says_why(mail_app, server, monkeypatch):
    monkeypatch.setattr(kinds, '_kinds', dict(kinds._kinds))
    # As a subject would be with a stray line break in its translation.
    kinds.email_kind('two_lines', subject='[Microblog] Two\nlines', template='test')(
        build_delivery_test
    )
    queue_email('two_lines', {'to': 'susan@example.com', 'label': 'one'})
    db.session.commit()
    assert len(deliver_pending().failed) == 1
    assert outbox_rows()[0].last_error == (
        'BadHeaderError: a header of the message holds a line break'
    )
    assert server.messages == []


def test_a_poison_message_fails_alone(mail_app, server, caplog):
    # Accounts stored by an older version, before registration refused such addresses.
    add_user('poison', POISON)
    add_user('emile', 'émile@example.com')
    for number in range(10):
        add_user(f'user{number}', f'user{number}@example.com')
    request_reset(mail_app, POISON)
    queue_email(BROKEN_KIND, {'to': 'user0@example.com'})
    db.session.commit()
    request_reset(mail_app, 'émile@example.com')
    for number in range(10):
        request_reset(mail_app, f'user{number}@example.com')

    with caplog.at_level(logging.INFO):
        report = deliver_pending()
    assert len(report.sent) == 10 and len(report.failed) == 3
    assert sorted(received.rcpt_tos[0] for received in server.messages) == sorted(
        f'user{number}@example.com' for number in range(10)
    )
    rows = outbox_rows()
    assert [row.status for row in rows[:3]] == ['failed'] * 3
    # What an admin reads in `flask mail status`, whole.
    assert rows[0].last_error == (
        'UndeliverableAddressError: The part before the @-sign reads as an encoded header '
        'word, so mail programs would show another address.'
    )
    assert rows[1].last_error == 'RuntimeError: builder bug for user0@example.com'
    assert 'Internationalized characters before the @-sign' in rows[2].last_error
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 3  # once each, when given up on
    assert deliver_pending().attempted == 0  # and never tried again


def test_a_stored_message_of_a_kind_no_longer_registered_fails_alone(mail_app, server, caplog):
    # Stored by an earlier release, which had this kind of email.
    db.session.execute(
        sa.insert(OutboundEmail).values(
            kind='retired_notice',
            data={'user_id': 1},
            recipient='user0@example.com',
            status='pending',
            attempts=0,
            created_at=utcnow(),
            next_attempt_at=utcnow(),
        )
    )
    db.session.commit()
    queue_due(1)
    mail_app.config['MAIL_CONNECTIONS'] = 1
    with caplog.at_level(logging.ERROR):
        report = deliver_pending()
    retired, other = outbox_rows()
    assert (report.failed, report.sent) == ([retired.id], [other.id])
    assert (retired.status, retired.attempts, retired.last_error) == (
        'failed',
        1,
        "no kind of email is registered as 'retired_notice'",
    )
    assert [received.rcpt_tos for received in server.messages] == [['user0@example.com']]
    assert deliver_pending().attempted == 0  # and never tried again


def test_a_server_error_mid_batch_fails_one_message_and_the_rest_go(mail_app, server):
    server.handler.script = ['250 ok', '554 Message rejected as spam', '452 Mailbox full']
    for number in range(6):
        send_email(TEST_KIND, {'to': f'user{number}@example.com', 'label': f'm{number}'})
    mail_app.config['MAIL_CONNECTIONS'] = 1
    report = deliver_pending()
    assert (len(report.sent), len(report.failed), len(report.retrying)) == (4, 1, 1)
    assert server.handler.connections == 1  # a refusal keeps the connection


ADDRESSES = st.one_of(
    st.emails(),
    st.text(max_size=80),
    st.builds(
        lambda local, domain: f'{local}@{domain}',
        st.text(max_size=30),
        st.sampled_from(['straße.de', 'ςοφία.gr', 'example.com', 'xn--strae-oqa.de', '例子.广告']),
    ),
)
# PostgreSQL's json cannot hold NUL, and requests with NUL are refused at the edge.
LABELS = st.text(alphabet=st.characters(blacklist_characters='\x00'), max_size=200)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(messages=st.lists(st.tuples(ADDRESSES, LABELS), min_size=1, max_size=5))
def test_a_pass_never_raises_whatever_was_queued(mail_app, server, messages):
    db.session.execute(sa.delete(OutboundEmail))
    db.session.commit()
    server.handler.messages.clear()
    for address, label in messages:
        queue_email(TEST_KIND, {'to': address, 'label': label})
    db.session.commit()
    report = deliver_pending()
    rows = outbox_rows()
    assert report.attempted == len(messages)
    assert {row.status for row in rows} <= {'sent', 'failed'}
    assert len(server.messages) == sum(row.status == 'sent' for row in rows)
    for received in server.messages:
        assert received.rcpt_tos[0].isascii()


# Links minted when they leave, and nothing usable at rest


def test_a_link_that_waited_out_a_long_outage_works_when_it_arrives(mail_app, port, monkeypatch):
    add_user('susan', 'susan@example.com')
    two_hours_ago = utcnow() - timedelta(hours=2)
    # The request and the first attempts happen two hours ago, while the server is down:
    # a token minted then would have expired 110 minutes before the email arrives.
    monkeypatch.setattr(app.models, 'utcnow', lambda: two_hours_ago)
    request_reset(mail_app, 'susan@example.com')
    assert len(deliver_pending().retrying) == 1
    monkeypatch.undo()

    server = MailServer(port).start()
    try:
        result = mail_app.test_cli_runner().invoke(args=['mail', 'send-pending', '--now'])
        assert 'sent 1, to retry 0, failed 0, dropped 0' in result.output
        (received,) = server.messages
    finally:
        server.stop()
    assert 'valid for 10 minutes' in received.part('text/plain')
    assert set_new_password(mail_app, reset_link(received), 'susan')


def test_a_request_older_than_the_link_max_age_is_dropped(mail_app, server, caplog):
    add_user('susan', 'susan@example.com')
    request_reset(mail_app, 'susan@example.com')
    db.session.execute(
        sa.update(OutboundEmail).values(created_at=utcnow() - timedelta(seconds=86401))
    )
    db.session.commit()
    with caplog.at_level(logging.INFO):
        report = deliver_pending()
    row = outbox_rows()[0]
    assert report.dropped == [row.id] and server.messages == []
    assert 'waited longer than MAIL_LINK_MAX_AGE (86400 s)' in row.last_error
    # The log names the message, its kind and the reason, as the row does.
    logged = [record.getMessage() for record in caplog.records]
    assert f'Email {row.id} ({row.kind}) dropped: {row.last_error}' in logged


def test_a_message_about_an_account_deleted_since_is_dropped_and_says_why(mail_app, server, caplog):
    queue_email('password_changed', {'user_id': 42})  # an account that is gone by now
    db.session.commit()
    with caplog.at_level(logging.INFO):
        report = deliver_pending()
    row = outbox_rows()[0]
    assert report.dropped == [row.id] and server.messages == []
    assert row.last_error == 'the account no longer exists'
    logged = [record.getMessage() for record in caplog.records]
    assert f'Email {row.id} (password_changed) dropped: the account no longer exists' in logged


def every_stored_value():
    """Every value of every column of every table, as text."""
    values = []
    for table in db.metadata.sorted_tables:
        for row in db.session.execute(sa.select(table)).all():
            values.extend(str(value) for value in row)
    return values


JWT = re.compile(r'[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}')


def test_no_table_holds_a_working_token(mail_app, server):
    user = add_user('susan', 'susan@example.com')
    request_reset(mail_app, 'susan@example.com')
    deliver_pending()
    (received,) = server.messages
    token = reset_link(received).rsplit('/', 1)[1]
    assert User.verify_reset_password_token(token) == user
    stored = every_stored_value()
    assert not any(token in value for value in stored)
    assert not any(JWT.search(value) for value in stored)


# Claims


def queue_due(count):
    for number in range(count):
        send_email(TEST_KIND, {'to': f'user{number}@example.com', 'label': str(number)})


def test_a_row_taken_since_it_was_read_is_left_to_its_taker(mail_app):
    queue_due(5)
    now = utcnow()
    read_by_a = candidate_ids(now, 10)  # worker A reads the due rows ...
    with mail_app.app_context():
        taken_by_b = claim_due(now, 'worker-b', 10)  # ... B claims them first ...
    taken_by_a = take(read_by_a, now, 'worker-a')  # ... and A's claim must find none
    claimed = [row.id for row in taken_by_a] + [row.id for row in taken_by_b]
    assert sorted(claimed) == sorted(set(claimed))
    assert len(claimed) == 5
    assert {row.claimed_by for row in outbox_rows()} <= {'worker-a', 'worker-b'}


def test_a_live_lease_is_respected_and_a_lapsed_one_taken_over(mail_app, server):
    queue_due(3)
    now = utcnow()
    lease = mail_app.config['MAIL_CLAIM_TIMEOUT']
    worker_a = Sender(now, DeliveryReport())
    claimed_by_a = claim_due(now, worker_a.worker, 10)
    assert len(claimed_by_a) == 3
    assert claim_due(now + timedelta(seconds=lease - 1), 'worker-b', 10) == []
    assert deliver_pending(now + timedelta(seconds=lease - 1)).attempted == 0
    report = deliver_pending(now + timedelta(seconds=lease + 1))
    assert len(report.sent) == 3 and len(server.messages) == 3
    # Worker A, back after its lease ran out, cannot overwrite what the taker recorded.
    worker_a.failed(claimed_by_a[0], 'a late answer', permanent=True)
    assert {row.status for row in outbox_rows()} == {'sent'}


def test_rows_being_claimed_elsewhere_are_skipped_not_waited_for(mail_app, database_url):
    if not database_url.startswith('postgresql'):
        pytest.skip('row locks (SKIP LOCKED) are PostgreSQL only; SQLite claims under one lock')
    queue_due(4)
    now = utcnow()
    with db.engine.connect() as other_worker:
        locked = (
            other_worker.execute(
                sa.select(OutboundEmail.id).order_by(OutboundEmail.id).limit(2).with_for_update()
            )
            .scalars()
            .all()
        )
        # Would wait for the other worker's locks (and fail after 2 s) without SKIP LOCKED.
        db.session.execute(sa.text("SET LOCAL lock_timeout = '2s'"))
        taken = [row.id for row in claim_due(now, 'worker-b', 10)]
        other_worker.rollback()
    assert len(taken) == 2 and not set(taken) & set(locked)


def test_concurrent_passes_never_raise_nor_send_twice(mail_app, server):
    mail_app.config.update(MAIL_BATCH_SIZE=2, MAIL_CONNECTIONS=3)
    for number in range(20):
        add_user(f'user{number}', f'user{number}@example.com')
        request_reset(mail_app, f'user{number}@example.com')
    request_reset(mail_app, 'nobody@example.com')
    errors = []

    def run_passes():
        with mail_app.app_context():
            try:
                for _ in range(5):
                    deliver_pending()
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                db.session.remove()

    passes = [threading.Thread(target=run_passes) for _ in range(3)]
    for thread in passes:
        thread.start()
    for thread in passes:
        thread.join(60)
    assert errors == []
    rcpts = sorted(received.rcpt_tos[0] for received in server.messages)
    assert rcpts == sorted(f'user{number}@example.com' for number in range(20))
    assert sorted(row.status for row in outbox_rows()) == ['dropped'] + ['sent'] * 20


def test_a_sender_whose_database_fails_stops_and_says_so_and_the_others_go_on(
    mail_app, server, caplog
):
    mail_app.config['MAIL_CONNECTIONS'] = 2
    queue_due(4)
    once = threading.Lock()  # taken by the first failure, never given back

    def the_database_goes_away_once(conn, cursor, statement, parameters, context, many):
        """The first write of a "sent" outcome fails as a lost connection would."""
        writes_sent = statement.startswith('UPDATE outbound_email') and 'sent_at' in statement
        if writes_sent and once.acquire(blocking=False):
            raise sa.exc.OperationalError(statement, parameters, OSError('connection lost'))

    sa.event.listen(db.engine, 'before_cursor_execute', the_database_goes_away_once)
    try:
        with caplog.at_level(logging.ERROR):
            report = deliver_pending()
    finally:
        sa.event.remove(db.engine, 'before_cursor_execute', the_database_goes_away_once)
    (stopped,) = [r for r in caplog.records if r.getMessage() == 'An email sender stopped']
    assert stopped.levelno == logging.ERROR
    assert isinstance(stopped.exc_info[1], sa.exc.OperationalError)
    # Its message went out unrecorded: its lease brings it back. The other sender sent the rest.
    assert len(report.sent) == 3 and len(server.messages) == 4
    assert sorted(row.status for row in outbox_rows()) == ['sending', 'sent', 'sent', 'sent']


# Parallel senders


class SlowHandler:
    """An SMTP server that takes a while over each message, counting how many it serves at once."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.active = 0
        self.most_at_once = 0
        self.received = 0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.active += 1
        self.most_at_once = max(self.most_at_once, self.active)
        await asyncio.sleep(self.seconds)
        self.active -= 1
        self.received += 1
        return '250 Message accepted'


@pytest.mark.sqlite_only
def test_a_slow_server_gets_several_messages_at_once(mail_app, port):
    from aiosmtpd.controller import Controller

    handler = SlowHandler(0.3)
    controller = Controller(handler, hostname='127.0.0.1', port=port)
    controller.start()
    try:
        queue_due(10)
        assert len(deliver_pending().sent) == 10
    finally:
        controller.stop()
    assert handler.received == 10
    assert handler.most_at_once == mail_app.config['MAIL_CONNECTIONS'] > 1


# When the worker works


def test_a_reset_request_does_not_wake_the_worker_but_a_notice_does(make_app, monkeypatch):
    app = make_app()
    backend = app.extensions['mail_delivery']
    calls = []
    monkeypatch.setattr(backend, 'notify', lambda wake=True: calls.append(wake))
    with app.app_context():
        add_user('susan', 'susan@example.com')
        request_reset(app, 'susan@example.com')
        request_reset(app, 'nobody@example.com')
        assert calls == [False, False]  # stored; taken on the worker's cadence
        send_email('password_changed', {'user_id': 1})
        assert calls == [False, False, True]


def test_the_worker_starts_with_the_gunicorn_worker_and_sends_what_waits(make_app, port, server):
    app = make_app(MAIL_SUPPRESS_SEND=False, MAIL_SERVER='127.0.0.1', MAIL_PORT=port)
    with app.app_context():
        add_user('susan', 'susan@example.com')
        # Stored by a process that is gone now.
        db.session.execute(
            sa.insert(OutboundEmail).values(
                kind='password_changed',
                data={'user_id': 1},
                status='pending',
                attempts=0,
                created_at=utcnow(),
                next_attempt_at=utcnow(),
            )
        )
        db.session.commit()
    assert server.messages == []

    hooks = runpy.run_path(str(Path(__file__).parents[1] / 'gunicorn.conf.py'))
    worker = type('Worker', (), {'wsgi': app})()
    hooks['post_worker_init'](worker)  # no request is made
    app.extensions['mail_delivery'].flush()
    assert [received.rcpt_tos for received in server.messages] == [['susan@example.com']]


def test_an_admin_breaks_the_server_for_an_hour_then_pushes_the_queue(mail_app, port, monkeypatch):
    an_hour_ago = utcnow() - timedelta(hours=1)
    monkeypatch.setattr(app.models, 'utcnow', lambda: an_hour_ago)
    for name in ('ann', 'bob', 'cem'):
        add_user(name, f'{name}@example.com')
        request_reset(mail_app, f'{name}@example.com')
    request_reset(mail_app, 'stranger@example.com')
    runner = mail_app.test_cli_runner()
    assert 'to retry 3' in runner.invoke(args=['mail', 'send-pending']).output
    monkeypatch.undo()

    server = MailServer(port).start()
    try:
        assert 'sent 0' in runner.invoke(args=['mail', 'send-pending']).output  # backing off
        output = runner.invoke(args=['mail', 'send-pending', '--now']).output
        assert 'sent 3, to retry 0, failed 0, dropped 0' in output
    finally:
        server.stop()
    by_address = {received.rcpt_tos[0]: received for received in server.messages}
    assert sorted(by_address) == ['ann@example.com', 'bob@example.com', 'cem@example.com']
    for name in ('ann', 'bob', 'cem'):
        assert f'Dear {name}' in by_address[f'{name}@example.com'].part('text/plain')
        assert set_new_password(mail_app, reset_link(by_address[f'{name}@example.com']), name)


@pytest.mark.sqlite_only
def test_status_says_whether_redis_answers(make_app):
    app = make_app(MAIL_QUEUE='rq', REDIS_URL=f'redis://:secret@127.0.0.1:{free_port()}/0')
    output = app.test_cli_runner().invoke(args=['mail', 'status']).output
    assert 'backend  rq (queue microblog-mail at redis://:***@127.0.0.1:' in output
    assert 'Redis does not answer' in output and 'secret' not in output


@pytest.mark.sqlite_only
def test_status_shows_the_rq_queue_when_redis_answers(make_app):
    from tests.helpers import TEST_REDIS_URL

    if not TEST_REDIS_URL:
        pytest.skip('TEST_REDIS_URL is not set: this needs a Redis server')
    app = make_app(MAIL_QUEUE='rq', REDIS_URL=TEST_REDIS_URL, MAIL_RQ_QUEUE='test-status-queue')
    backend = app.extensions['mail_delivery']
    backend.queue.delete(delete_jobs=True)
    try:
        backend.notify(wake=True)
        output = app.test_cli_runner().invoke(args=['mail', 'status']).output
        assert 'Redis answers, 1 pass(es) queued, 0 scheduled' in output
    finally:
        backend.queue.delete(delete_jobs=True)


# What a hostile review found


def test_a_database_error_in_a_builder_fails_that_message_alone(mail_app, server):
    add_user('susan', 'susan@example.com')
    # Stored by hand: an id the database cannot even compare (PostgreSQL refuses the query).
    queue_email('password_changed', {'user_id': 'not-a-number'})
    queue_email('password_changed', {'user_id': 1})
    db.session.commit()
    mail_app.config['MAIL_CONNECTIONS'] = 1
    report = deliver_pending()
    assert (len(report.sent), len(report.failed) + len(report.dropped)) == (1, 1)
    assert [received.rcpt_tos for received in server.messages] == [['susan@example.com']]
    assert {row.status for row in outbox_rows()} <= {'sent', 'failed', 'dropped'}


def test_an_error_text_the_database_cannot_store_is_recorded_cleaned(mail_app, server):
    server.handler.script = ['554 rejected \x00 because']
    queue_due(2)
    mail_app.config['MAIL_CONNECTIONS'] = 1
    report = deliver_pending()
    assert (len(report.sent), len(report.failed)) == (1, 1)
    failed = [row for row in outbox_rows() if row.status == 'failed']
    assert failed[0].last_error == '554 rejected \\x00 because'


def test_a_lease_runs_from_the_claim_not_from_the_start_of_the_pass(mail_app):
    queue_due(1)
    pass_started = utcnow() - timedelta(hours=1)
    db.session.execute(sa.update(OutboundEmail).values(next_attempt_at=pass_started))
    db.session.commit()
    (claimed,) = take([row.id for row in outbox_rows()], pass_started, 'worker-a')
    lease = timedelta(seconds=mail_app.config['MAIL_CLAIM_TIMEOUT'])
    assert claimed.claimed_until >= utcnow() + lease - timedelta(seconds=5)
    assert claim_due(utcnow(), 'worker-b', 10) == []


def test_a_sender_whose_lease_ran_out_leaves_what_was_taken_over(mail_app, server):
    queue_due(3)
    now = utcnow()
    sender = Sender(now, DeliveryReport())
    held = claim_due(now, sender.worker, 10)
    # The sender was slow: by now its leases ran out and another worker took the last two.
    sender.now = now + timedelta(seconds=mail_app.config['MAIL_CLAIM_TIMEOUT'] + 1)
    db.session.execute(
        sa.update(OutboundEmail)
        .where(OutboundEmail.id.in_([held[1].id, held[2].id]))
        .values(claimed_by='worker-b', claimed_until=sender.now + timedelta(minutes=5))
    )
    db.session.commit()
    sender.send_held(held)
    sender.courier.hang_up()
    assert sender.report.sent == [held[0].id]
    assert len(server.messages) == 1
    assert [row.claimed_by for row in outbox_rows()] == [None, 'worker-b', 'worker-b']


def test_a_message_is_attempted_only_with_an_attempts_time_left_on_its_lease(
    mail_app, server, monkeypatch
):
    """An attempt can take three MAIL_TIMEOUTs and more: a lease with less time than that
    left is renewed first, so that no other worker takes the message over mid-send."""
    queue_due(1)
    now = utcnow()
    sender = Sender(now, DeliveryReport())
    (held,) = claim_due(now, sender.worker, 10)
    attempt = timedelta(seconds=3 * mail_app.config['MAIL_TIMEOUT'] + 5)
    send = Courier.send
    lease_left = []

    def watch_the_lease(courier, message, quiet):
        """How long the message's lease still runs as its attempt begins."""
        until = db.session.scalar(
            sa.select(OutboundEmail.claimed_until).where(OutboundEmail.id == held.id)
        )
        lease_left.append(until - sender.now)
        return send(courier, message, quiet=quiet)

    monkeypatch.setattr(Courier, 'send', watch_the_lease)
    # The sender comes to the message with a second less than an attempt left on its lease.
    sender.now = held.claimed_until - attempt + timedelta(seconds=1)
    sender.send_held([held])
    sender.courier.hang_up()
    assert sender.report.sent == [held.id] and len(server.messages) == 1
    assert lease_left[0] >= attempt


class AuthRequired:
    """aiosmtpd settings of a server that wants a login before it takes any mail."""

    def __init__(self, password):
        self.password = password

    def __call__(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult

        return AuthResult(success=auth_data.password == self.password.encode())


@pytest.mark.sqlite_only
@pytest.mark.filterwarnings('ignore:Requiring AUTH while not requiring TLS:UserWarning')
@pytest.mark.parametrize('login', [None, ('microblog', 'wrong-password')])
def test_a_server_refusing_our_login_or_sender_is_retried_not_failed(make_app, port, login):
    from aiosmtpd.controller import Controller

    from tests.mailserver import RecordingHandler

    controller = Controller(
        RecordingHandler(),
        hostname='127.0.0.1',
        port=port,
        authenticator=AuthRequired('right-password'),
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    username, password = login or (None, None)
    app = make_app(
        MAIL_SUPPRESS_SEND=False,
        MAIL_SERVER='127.0.0.1',
        MAIL_PORT=port,
        MAIL_QUEUE='none',
        MAIL_USERNAME=username,
        MAIL_PASSWORD=password,
        MAIL_TIMEOUT=2,
    )
    try:
        with app.app_context():
            queue_due(3)
            report = deliver_pending()
            assert (len(report.retrying), len(report.failed)) == (3, 0)
            assert {row.status for row in outbox_rows()} == {'pending'}
            error = outbox_rows()[0].last_error
            if login is None:
                assert error.startswith('530'), error  # at MAIL FROM: authentication required
    finally:
        controller.stop()


@pytest.mark.sqlite_only
def test_a_sender_address_mail_cannot_use_is_refused_at_start_up(make_app):
    with pytest.raises(SystemExit, match="MAIL_DEFAULT_SENDER='www-data@localhost' cannot be"):
        make_app(MAIL_DEFAULT_SENDER='www-data@localhost')


@pytest.mark.sqlite_only
def test_the_outage_notice_of_a_421_goes_to_one_message_and_a_new_connection_follows(
    mail_app, server
):
    server.handler.script = ['421 Service shutting down']
    queue_due(4)
    mail_app.config['MAIL_CONNECTIONS'] = 1
    report = deliver_pending()
    assert (len(report.sent), len(report.retrying), len(report.failed)) == (3, 1, 0)


@pytest.mark.sqlite_only
def test_mail_debug_never_prints_a_working_link(make_app, port, server, capfd):
    app = make_app(
        MAIL_SUPPRESS_SEND=False,
        MAIL_SERVER='127.0.0.1',
        MAIL_PORT=port,
        MAIL_QUEUE='none',
        MAIL_DEBUG=True,
    )
    with app.app_context():
        add_user('susan', 'susan@example.com')
        request_reset(app, 'susan@example.com')
        queue_email('password_changed', {'user_id': 1})
        db.session.commit()
        assert len(deliver_pending().sent) == 2
    printed = capfd.readouterr().err
    token = reset_link(
        next(m for m in server.messages if '/reset_password/' in m.part('text/plain'))
    )
    assert 'is not shown' in printed
    assert token.rsplit('/', 1)[1] not in printed and '/reset_password/' not in printed
    assert 'rcpt TO:<susan@example.com>' in printed.replace("b'", '').replace("'", '') or (
        'susan@example.com' in printed
    )


@pytest.mark.sqlite_only
def test_mail_debug_hides_only_the_conversation_of_a_message_with_a_link(
    make_app, port, server, capfd
):
    app = make_app(
        MAIL_SUPPRESS_SEND=False,
        MAIL_SERVER='127.0.0.1',
        MAIL_PORT=port,
        MAIL_QUEUE='none',
        MAIL_DEBUG=True,
        MAIL_CONNECTIONS=1,  # one connection: the reset, then the notice, then goodbye
    )
    with app.app_context():
        add_user('susan', 'susan@example.com')
        request_reset(app, 'susan@example.com')
        queue_email('password_changed', {'user_id': 1})
        db.session.commit()
        assert len(deliver_pending().sent) == 2
    printed = capfd.readouterr().err
    assert printed.count('is not shown') == 1
    # After the message with a link, the connection's conversation is printed again.
    assert printed.count("send: 'mail FROM:<no-reply@example.com>") == 1
    assert 'Subject: [Microblog] Your password was changed' in printed
    assert printed.count("send: 'quit") == 1


def test_a_request_for_an_unknown_address_costs_the_pass_what_a_known_one_does(mail_app, server):
    import flask

    add_user('susan', 'susan@example.com')
    rendered = []

    def record(sender, template, context, **extra):
        rendered.append(template.name)

    flask.template_rendered.connect(record, mail_app)
    try:
        work = {}
        for address in ('susan@example.com', 'nobody@example.com'):
            rendered.clear()
            request_reset(mail_app, address)
            rendered.clear()  # the page itself
            deliver_pending()
            work[address] = list(rendered)
    finally:
        flask.template_rendered.disconnect(record, mail_app)
    assert (
        work['nobody@example.com']
        == work['susan@example.com']
        == [
            'email/reset_password.txt',
            'email/reset_password.html',
        ]
    )
    assert len(server.messages) == 1
    assert outbox_rows()[1].last_error == 'no account has this address'


@pytest.mark.parametrize('command', [['status'], ['send-pending', '--now'], ['retry']])
def test_mail_commands_before_the_first_upgrade_say_what_to_run(make_app, command):
    app = make_app(create_tables=False)
    result = app.test_cli_runner().invoke(args=['mail', *command])
    assert result.exit_code == 1
    assert result.output.strip() == (
        'Error: The database has no outbox yet: run `flask db upgrade` first.'
    )
