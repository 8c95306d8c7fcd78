"""In production, errors are logged to a file or stdout and emailed to the admins, throttled."""

import logging

import pytest

from app.logs import OTHER_LOGGERS, AdminErrorMail
from tests.mailserver import MailServer, accept_login

# Nothing here depends on the database: SQLite is enough.
pytestmark = pytest.mark.sqlite_only

DATABASE_PASSWORD = 'db-password-never-in-an-email'
MAIL_PASSWORD = 'smtp-password-never-in-an-email'
RESET_TOKEN = 'eyJhbGciOiJIUzI1NiJ9.eyJyZXNldF9wYXNzd29yZCI6MX0.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg'


@pytest.fixture
def production_app(make_app, tmp_path, monkeypatch):
    """An app as it runs in production (no debug, no testing), logging under tmp_path."""
    monkeypatch.chdir(tmp_path)
    created = []
    loggers = [logging.getLogger(name) for name in ('app', *OTHER_LOGGERS)]
    before = {logger.name: list(logger.handlers) for logger in loggers}
    levels = {logger.name: logger.level for logger in loggers}

    def factory(**overrides):
        app = make_app(TESTING=False, MAIL_SUPPRESS_SEND=False, **overrides)
        created.append(app)
        return app

    yield factory
    for app in created:
        listener = app.extensions.get('error_mail_listener')
        if listener is not None and listener._thread is not None:
            listener.stop()
    for logger in loggers:
        logger.setLevel(levels[logger.name])
        for handler in list(logger.handlers):
            if handler not in before[logger.name]:
                logger.removeHandler(handler)
                handler.close()


def sent_reports(app):
    """Send what the error email thread has queued, then stop it (as the process exits)."""
    app.extensions['error_mail_listener'].stop()


def test_logs_to_a_rotating_file(production_app, tmp_path):
    app = production_app(LOG_TO_STDOUT=False, MAIL_SERVER=None)
    app.logger.warning('something to look at')
    text = (tmp_path / 'logs' / 'microblog.log').read_text()
    assert 'something to look at' in text


def test_only_a_serving_process_logs_its_start(production_app, tmp_path):
    app = production_app(LOG_TO_STDOUT=False, MAIL_SERVER=None)
    log = tmp_path / 'logs' / 'microblog.log'
    assert 'Microblog startup' not in log.read_text()  # `flask mail status` and the like
    client = app.test_client()
    client.get('/login')
    client.get('/login')
    assert log.read_text().count('Microblog startup') == 1


def test_logs_to_stdout_when_asked(production_app, tmp_path, capsys):
    app = production_app(LOG_TO_STDOUT=True, MAIL_SERVER=None)
    app.logger.warning('to the container log')
    assert 'to the container log' in capsys.readouterr().err
    assert not (tmp_path / 'logs').exists()


def test_the_rate_limiter_says_in_the_log_when_it_falls_back(production_app, tmp_path):
    production_app(LOG_TO_STDOUT=False, MAIL_SERVER=None)
    logging.getLogger('flask-limiter').warning('Rate limit storage unreachable')
    assert 'Rate limit storage unreachable' in (tmp_path / 'logs' / 'microblog.log').read_text()


def test_errors_are_emailed_to_the_admins(production_app):
    server = MailServer().start()
    try:
        app = production_app(
            LOG_TO_STDOUT=True,
            MAIL_SERVER='127.0.0.1',
            MAIL_PORT=server.port,
            ADMINS=['boss@example.com', 'deputy@example.com'],
        )
        app.logger.warning('not worth an email')
        app.logger.error('the database is on fire')
        sent_reports(app)
        [received] = server.messages
        assert sorted(received.rcpt_tos) == ['boss@example.com', 'deputy@example.com']
        assert received.message['Subject'].startswith('[Microblog] Error: ERROR logged at ')
        assert 'the database is on fire' in received.part('text/plain')
        assert 'the database is on fire' in received.part('text/html')
    finally:
        server.stop()


def test_error_emails_use_the_ssl_setting_and_the_login(production_app, trusted_certificate):
    server = MailServer(
        ssl_context=trusted_certificate.server_context(),
        authenticator=accept_login('microblog@example.com', MAIL_PASSWORD),
        auth_require_tls=False,
    ).start()
    try:
        app = production_app(
            LOG_TO_STDOUT=True,
            MAIL_SERVER='127.0.0.1',
            MAIL_PORT=server.port,
            MAIL_USE_SSL=True,
            MAIL_USERNAME='microblog@example.com',
            MAIL_PASSWORD=MAIL_PASSWORD,
            MAIL_TIMEOUT=2,
        )
        app.logger.error('reported over TLS from the first byte')
        sent_reports(app)
        [received] = server.messages
        assert 'reported over TLS from the first byte' in received.part('text/plain')
    finally:
        server.stop()


def fail_in_a_view(app, exc):
    """Make /boom raise ``exc`` (as a bug would), and request it: Flask logs the error."""

    @app.route('/boom/<path:rest>')
    def boom(rest):
        raise exc

    return app.test_client().get(f'/boom/{RESET_TOKEN}')


def test_an_error_email_holds_no_secrets(production_app):
    server = MailServer().start()
    try:
        app = production_app(
            LOG_TO_STDOUT=True,
            MAIL_SERVER='127.0.0.1',
            MAIL_PORT=server.port,
            MAIL_PASSWORD=MAIL_PASSWORD,
            REDIS_URL=f'redis://:{DATABASE_PASSWORD}@redis.internal:6379/0',
        )
        secret_key = app.config['SECRET_KEY']
        failure = RuntimeError(
            f'could not connect to postgresql://microblog:{DATABASE_PASSWORD}@db.internal/mb '
            f'with key {secret_key} and {MAIL_PASSWORD}\n'
            "[parameters: ('susan', 'pbkdf2:sha256:600000$salt$hash')]"
        )
        response = fail_in_a_view(app, failure)
        assert response.status_code == 500
        sent_reports(app)
        [received] = server.messages
        for body in (received.part('text/plain'), received.part('text/html')):
            assert 'RuntimeError' in body and 'could not connect to' in body
            assert 'Traceback' in body
            for secret in (DATABASE_PASSWORD, secret_key, MAIL_PASSWORD, RESET_TOKEN, 'pbkdf2'):
                assert secret not in body
            assert 'postgresql://microblog:[hidden]@db.internal/mb' in body
            assert '/boom/[token]' in body
    finally:
        server.stop()


class Clock:
    """A clock the test moves by hand, so the throttle never depends on real time."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_each_kind_of_error_is_emailed_once_per_interval(production_app):
    server = MailServer().start()
    try:
        app = production_app(
            LOG_TO_STDOUT=True,
            MAIL_SERVER='127.0.0.1',
            MAIL_PORT=server.port,
            ERROR_MAIL_INTERVAL=600,
        )
        handler = app.extensions['error_mail']
        assert isinstance(handler, AdminErrorMail)
        handler.clock = clock = Clock()
        client = app.test_client()

        @app.route('/broken')
        def broken():
            return {}['missing']  # a KeyError, on this line every time

        for _ in range(5):
            assert client.get('/broken').status_code == 500
        app.logger.error('something else went wrong')
        clock.now += 599
        assert client.get('/broken').status_code == 500
        clock.now += 2
        assert client.get('/broken').status_code == 500
        sent_reports(app)

        subjects = [received.message['Subject'] for received in server.messages]
        assert len(subjects) == 3, subjects
        assert subjects[0].startswith('[Microblog] Error: KeyError at tests/test_logging.py:')
        assert subjects[1].startswith('[Microblog] Error: ERROR logged at ')
        assert subjects[2] == subjects[0]
        later = server.messages[2].part('text/plain')
        assert '5 more errors of this kind were logged since the last email' in later
    finally:
        server.stop()
