"""In production, errors are logged to a file or stdout and emailed to the admins."""

import logging

import pytest

from tests.mailserver import MailServer


@pytest.fixture
def production_app(make_app, tmp_path, monkeypatch):
    """An app as it runs in production (no debug, no testing), logging under tmp_path."""
    monkeypatch.chdir(tmp_path)
    created = []

    def factory(**overrides):
        app = make_app(TESTING=False, MAIL_SUPPRESS_SEND=False, **overrides)
        created.append(app)
        return app

    before = list(logging.getLogger('app').handlers)
    yield factory
    logger = logging.getLogger('app')
    for app in created:
        listener = app.extensions.get('error_mail_listener')
        if listener is not None and listener._thread is not None:
            listener.stop()
    for handler in list(logger.handlers):
        if handler not in before:
            logger.removeHandler(handler)
            handler.close()


def test_logs_to_a_rotating_file(production_app, tmp_path):
    app = production_app(LOG_TO_STDOUT=False, MAIL_SERVER=None)
    app.logger.warning('something to look at')
    text = (tmp_path / 'logs' / 'microblog.log').read_text()
    assert 'Microblog startup' in text
    assert 'something to look at' in text


def test_logs_to_stdout_when_asked(production_app, tmp_path, capsys):
    app = production_app(LOG_TO_STDOUT=True, MAIL_SERVER=None)
    app.logger.warning('to the container log')
    assert 'to the container log' in capsys.readouterr().err
    assert not (tmp_path / 'logs').exists()


def test_errors_are_emailed_to_the_admins(production_app):
    server = MailServer().start()
    try:
        app = production_app(
            LOG_TO_STDOUT=True,
            MAIL_SERVER='127.0.0.1',
            MAIL_PORT=server.port,
            ADMINS=['boss@example.com'],
        )
        app.logger.warning('not worth an email')
        app.logger.error('the database is on fire')
        app.extensions['error_mail_listener'].stop()  # sends what is queued, then stops
        assert len(server.messages) == 1
        received = server.messages[0]
        assert received.rcpt_tos == ['boss@example.com']
        assert received.message['Subject'] == 'Microblog Failure'
        assert 'the database is on fire' in received.message.get_content()
    finally:
        server.stop()
