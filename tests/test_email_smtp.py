"""Email over real SMTP, the `flask mail test` command, and the mail settings."""

import smtplib
import ssl

import pytest
import sqlalchemy as sa

import config
from app import create_app, db
from app.mail import deliver_pending, send_email
from app.mail.smtp import SMTPConnection
from app.models import OutboundEmail
from tests.helpers import TestConfig
from tests.kinds import TEST_KIND
from tests.mailserver import MailServer, accept_login, free_port

# Nothing here depends on the database: SQLite is enough.
pytestmark = pytest.mark.sqlite_only


@pytest.fixture
def smtp_server():
    """A real aiosmtpd server on a free loopback port."""
    server = MailServer().start()
    yield server
    server.stop()


@pytest.fixture
def smtp_app(make_app, smtp_server):
    """An app that really sends, to the test's SMTP server."""
    return make_app(MAIL_SUPPRESS_SEND=False, MAIL_SERVER='127.0.0.1', MAIL_PORT=smtp_server.port)


def test_reset_email_over_real_smtp(smtp_app, smtp_server, make_user):
    with smtp_app.app_context():
        make_user('susan')
    client = smtp_app.test_client()
    client.post('/reset_password_request', data={'email': 'susan@example.com'})
    smtp_app.extensions['mail_delivery'].flush()

    assert len(smtp_server.messages) == 1
    received = smtp_server.messages[0]
    assert received.rcpt_tos == ['susan@example.com']
    assert received.message['To'] == 'susan@example.com'
    assert received.message['From'] == 'no-reply@example.com'
    assert received.message['Subject'] == '[Microblog] Reset Your Password'
    text = received.part('text/plain')
    html = received.part('text/html')
    assert 'Dear susan' in text and 'Dear susan' in html
    link = next(word for word in text.split() if '/reset_password/' in word)
    assert link.startswith('https://microblog.example.com/reset_password/')
    assert link in html


def test_mail_test_command_prints_the_conversation(smtp_app, smtp_server):
    result = smtp_app.test_cli_runner().invoke(args=['mail', 'test', 'admin@example.com'])
    assert result.exit_code == 0, result.output
    assert f'Connecting to 127.0.0.1:{smtp_server.port}' in result.output
    assert 'accepted the message for admin@example.com' in result.output
    assert smtp_server.messages[0].rcpt_tos == ['admin@example.com']
    assert 'retcode (250)' in result.stderr  # the server's own words, as smtplib saw them


def test_mail_test_command_says_why_it_cannot_connect(make_app):
    port = free_port()
    app = make_app(MAIL_SUPPRESS_SEND=False, MAIL_SERVER='127.0.0.1', MAIL_PORT=port)
    result = app.test_cli_runner().invoke(args=['mail', 'test', 'admin@example.com'])
    assert result.exit_code != 0
    assert f'Could not send through 127.0.0.1:{port}' in result.output
    assert 'ConnectionRefusedError' in result.output


def mail_test(app):
    """Run `flask mail test admin@example.com`; the result and its lines of hint."""
    result = app.test_cli_runner().invoke(args=['mail', 'test', 'admin@example.com'])
    hints = [line for line in result.output.splitlines() if line.startswith('Hint: ')]
    return result, hints


def sending_app(make_app, server, **settings):
    """An app that really sends to ``server``, with ``settings``."""
    return make_app(
        MAIL_SUPPRESS_SEND=False, MAIL_SERVER='127.0.0.1', MAIL_PORT=server.port, **settings
    )


def test_mail_test_without_a_server_says_what_to_set(make_app):
    result, hints = mail_test(make_app(MAIL_SERVER=None))
    assert result.exit_code == 1
    assert 'MAIL_SERVER is not set' in result.output
    assert 'None:25' not in result.output
    assert hints == [
        'Hint: set MAIL_SERVER and MAIL_PORT (see "Sending real email" in README.md), or run '
        '`flask mail sink` and set MAIL_SERVER=127.0.0.1 MAIL_PORT=8025.'
    ]


def test_mail_test_on_a_tls_port_with_starttls_says_use_ssl(make_app, certificate):
    # Port 465 (TLS from the first byte) with MAIL_USE_TLS: the greeting never comes.
    server = MailServer(ssl_context=certificate.server_context()).start()
    try:
        app = sending_app(make_app, server, MAIL_USE_TLS=True, MAIL_TIMEOUT=1)
        result, [hint] = mail_test(app)
    finally:
        server.stop()
    assert result.exit_code == 1
    assert 'set MAIL_USE_SSL=true and MAIL_USE_TLS=false' in hint


def test_mail_test_on_a_starttls_port_with_ssl_says_use_tls(make_app, smtp_server):
    # Port 587 (STARTTLS) with MAIL_USE_SSL: the server answers in plain text.
    result, [hint] = mail_test(sending_app(make_app, smtp_server, MAIL_USE_SSL=True))
    assert result.exit_code == 1
    assert 'does not speak TLS from the first byte' in hint
    assert 'set MAIL_USE_TLS=true and MAIL_USE_SSL=false' in hint


def mail_test_with_password(make_app, password):
    """`flask mail test` with ``password`` against a server that takes one login."""
    server = MailServer(
        authenticator=accept_login('microblog@example.com', 'the-right-password'),
        auth_require_tls=False,
    ).start()
    try:
        app = sending_app(
            make_app, server, MAIL_USERNAME='microblog@example.com', MAIL_PASSWORD=password
        )
        return (*mail_test(app), server)
    finally:
        server.stop()


def test_mail_test_with_a_refused_login_says_check_the_login(make_app):
    result, [hint], server = mail_test_with_password(make_app, 'a-wrong-password')
    assert result.exit_code == 1
    assert 'refused the login of MAIL_USERNAME=microblog@example.com' in hint
    assert 'check MAIL_USERNAME and MAIL_PASSWORD' in hint
    assert server.messages == []


def test_mail_test_with_a_certificate_that_does_not_verify_says_why(make_app, certificate):
    server = MailServer(tls_context=certificate.server_context(), require_starttls=True).start()
    try:
        result, [hint] = mail_test(sending_app(make_app, server, MAIL_USE_TLS=True))
    finally:
        server.stop()
    assert result.exit_code == 1
    assert f'the certificate of 127.0.0.1:{server.port} does not verify' in hint
    assert 'set MAIL_SERVER to the host name the certificate is for' in hint


def test_mail_test_over_starttls_with_a_trusted_certificate_sends(make_app, trusted_certificate):
    server = MailServer(
        tls_context=trusted_certificate.server_context(), require_starttls=True
    ).start()
    try:
        result, hints = mail_test(sending_app(make_app, server, MAIL_USE_TLS=True))
    finally:
        server.stop()
    assert result.exit_code == 0, result.output
    assert hints == []
    assert [received.rcpt_tos for received in server.messages] == [['admin@example.com']]


def test_mail_test_with_nothing_listening_says_check_the_port(make_app):
    port = free_port()
    app = make_app(MAIL_SUPPRESS_SEND=False, MAIL_SERVER='127.0.0.1', MAIL_PORT=port)
    result, [hint] = mail_test(app)
    assert f'nothing accepts connections at 127.0.0.1:{port}' in hint


def test_smtp_connection_has_a_timeout(smtp_app, smtp_server):
    with smtp_app.app_context(), SMTPConnection(smtp_app.extensions['mail']) as connection:
        assert connection.host.sock.gettimeout() == smtp_app.config['MAIL_TIMEOUT']


def test_an_ssl_connection_has_the_timeout_too(make_app, trusted_certificate):
    server = MailServer(ssl_context=trusted_certificate.server_context()).start()
    try:
        app = sending_app(make_app, server, MAIL_USE_SSL=True, MAIL_TIMEOUT=7)
        with app.app_context(), SMTPConnection(app.extensions['mail']) as connection:
            assert connection.host.sock.gettimeout() == 7
    finally:
        server.stop()


def test_mail_over_ssl_to_a_certificate_that_does_not_verify_is_not_sent(make_app, certificate):
    server = MailServer(ssl_context=certificate.server_context()).start()
    try:
        result, [hint] = mail_test(sending_app(make_app, server, MAIL_USE_SSL=True))
    finally:
        server.stop()
    assert result.exit_code == 1
    assert f'the certificate of 127.0.0.1:{server.port} does not verify' in hint
    assert server.messages == []


def test_mail_goes_out_with_the_login_the_server_accepts(make_app):
    result, hints, server = mail_test_with_password(make_app, 'the-right-password')
    assert result.exit_code == 0, result.output
    assert hints == []
    assert [received.rcpt_tos for received in server.messages] == [['admin@example.com']]


@pytest.mark.parametrize(
    'login', [{'MAIL_USERNAME': 'microblog@example.com'}, {'MAIL_PASSWORD': 'a-password'}]
)
def test_half_a_login_is_not_tried_on_a_server_that_asks_none(make_app, smtp_server, login):
    # A server with no AUTH answers a login attempt with an error: nothing would be sent.
    result, hints = mail_test(sending_app(make_app, smtp_server, **login))
    assert result.exit_code == 0, result.output
    assert [received.rcpt_tos for received in smtp_server.messages] == [['admin@example.com']]


def test_without_a_mail_server_a_message_waits_and_says_why(make_app):
    app = make_app(MAIL_SUPPRESS_SEND=False, MAIL_SERVER=None, MAIL_QUEUE='none')
    with app.app_context():
        send_email(TEST_KIND, {'to': 'susan@example.com', 'label': 'one'})
        assert len(deliver_pending().retrying) == 1
        email = db.session.scalar(sa.select(OutboundEmail))
        assert email.status == OutboundEmail.PENDING
        assert email.last_error == 'MailNotConfigured: MAIL_SERVER is not set'


def test_starttls_verifies_the_certificate(make_app, smtp_server, monkeypatch):
    seen = {}

    def fake_starttls(self, *, context=None):
        seen['context'] = context
        raise smtplib.SMTPNotSupportedError('stop here')

    monkeypatch.setattr(smtplib.SMTP, 'starttls', fake_starttls)
    app = make_app(
        MAIL_SUPPRESS_SEND=False,
        MAIL_SERVER='127.0.0.1',
        MAIL_PORT=smtp_server.port,
        MAIL_USE_TLS=True,
    )
    with app.app_context(), pytest.raises(smtplib.SMTPNotSupportedError):
        SMTPConnection(app.extensions['mail']).configure_host()
    assert seen['context'].verify_mode == ssl.CERT_REQUIRED
    assert seen['context'].check_hostname


@pytest.mark.parametrize(
    ('value', 'expected'),
    [
        ('1', True),
        ('true', True),
        ('Yes', True),
        ('on', True),
        ('0', False),
        ('false', False),
        ('no', False),
        ('OFF', False),
        ('', False),
    ],
)
def test_boolean_settings_parse_strictly(monkeypatch, value, expected):
    monkeypatch.setenv('MAIL_USE_TLS', value)
    assert config.env_bool('MAIL_USE_TLS') is expected


def test_a_boolean_setting_that_is_not_one_is_an_error(monkeypatch):
    monkeypatch.setenv('MAIL_USE_TLS', 'maybe')
    with pytest.raises(config.ConfigError, match='MAIL_USE_TLS'):
        config.env_bool('MAIL_USE_TLS')


def test_tls_and_ssl_together_refuse_to_start(database_url):
    settings = type('Both', (TestConfig,), {'MAIL_USE_TLS': True, 'MAIL_USE_SSL': True})
    settings.SQLALCHEMY_DATABASE_URI = database_url
    with pytest.raises(config.ConfigError, match='MAIL_USE_TLS and MAIL_USE_SSL are both on'):
        create_app(settings)


def test_sender_falls_back_to_the_first_admin(make_app):
    app = make_app(MAIL_DEFAULT_SENDER=None, ADMINS=['boss@example.com', 'other@example.com'])
    assert app.config['MAIL_DEFAULT_SENDER'] == 'boss@example.com'
