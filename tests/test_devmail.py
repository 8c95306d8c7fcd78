"""The development inbox: what the local mail sink keeps, shown at /_mail in debug mode only."""

import os
import re
import signal
import smtplib
import socket
import sys
import threading
import time

import pytest

from app import db
from app.mail import cli as mail_cli
from app.mail.sink import MailSink, sink_folder
from app.models import User
from tests.helpers import PASSWORD
from tests.mailserver import free_port

# Nothing here depends on the database: SQLite is enough.
pytestmark = pytest.mark.sqlite_only


@pytest.fixture
def sink_port():
    """A free port for the sink."""
    return free_port()


@pytest.fixture
def debug_app(make_app, sink_port):
    """The app as `make run` serves it: debug mode, development defaults, mail to the sink."""
    return make_app(
        DEBUG=True,
        TESTING=False,
        SECRET_KEY=None,
        SERVER_NAME=None,
        PREFERRED_URL_SCHEME=None,
        SESSION_COOKIE_SECURE=None,
        REMEMBER_COOKIE_SECURE=None,
        MAIL_SUPPRESS_SEND=False,
        MAIL_SERVER='127.0.0.1',
        MAIL_PORT=sink_port,
    )


@pytest.fixture
def sink(debug_app, sink_port):
    """The local mail sink the debug app sends to, keeping what it receives."""
    running = MailSink('127.0.0.1', sink_port, sink_folder(debug_app, sink_port)).start()
    yield running
    running.stop()


def request_a_reset(app):
    """Make susan's account, ask for a reset link as she would, and let delivery send it."""
    client = app.test_client()
    with app.app_context():  # made directly: registering would send a confirmation too
        susan = User(username='susan', email='susan@example.com')
        susan.set_password(PASSWORD)
        db.session.add(susan)
        db.session.commit()
    client.post('/reset_password_request', data={'email': 'susan@example.com'})
    app.extensions['mail_delivery'].flush()
    return client


def only_message_key(client):
    page = client.get('/_mail')
    assert page.status_code == 200
    keys = re.findall(r'href="/_mail/([^"/]+)"', page.text)
    assert len(keys) == 1, page.text
    return keys[0]


def test_the_inbox_shows_the_reset_email_as_its_recipient_sees_it(debug_app, sink):
    client = request_a_reset(debug_app)
    inbox = client.get('/_mail')
    assert '[Microblog] Reset Your Password' in inbox.text
    assert 'To susan@example.com' in inbox.text
    key = only_message_key(client)

    page = client.get(f'/_mail/{key}')
    assert page.status_code == 200
    assert '<dt>To</dt><dd>susan@example.com</dd>' in page.text
    assert '<dt>Delivered-To</dt><dd>susan@example.com</dd>' in page.text
    frame = re.search(r'<iframe[^>]*>', page.text)[0]
    assert f'src="/_mail/{key}/html"' in frame
    assert 'sandbox="allow-popups' in frame and 'allow-scripts' not in frame
    # The text part, with its link made a link.
    link = re.search(r'<a href="(http://127\.0\.0\.1:5000/reset_password/[^"]+)">', page.text)[1]

    html = client.get(f'/_mail/{key}/html')
    assert html.status_code == 200
    assert html.headers['Content-Security-Policy'].startswith('sandbox ')
    assert "default-src 'none'" in html.headers['Content-Security-Policy']
    assert 'allow-scripts' not in html.headers['Content-Security-Policy']
    assert html.headers['X-Frame-Options'] == 'SAMEORIGIN'
    assert '<base target="_top">' in html.text
    assert f'href="{link}"' in html.text

    # The link works: it leads to the form that sets a new password.
    opened = client.get(link.removeprefix('http://127.0.0.1:5000'))
    assert opened.headers['Location'] == '/reset_password'
    assert 'Reset Your Password' in client.get('/reset_password').text


def test_the_inbox_outlives_a_restart_of_the_app_but_not_of_the_sink(
    debug_app, sink, make_app, sink_port
):
    request_a_reset(debug_app)
    restarted = make_app(create_tables=False, **_settings_of(debug_app))
    client = restarted.test_client()
    assert '[Microblog] Reset Your Password' in client.get('/_mail').text
    sink.stop()
    page = client.get('/_mail')
    assert page.status_code == 200
    assert 'No local mail sink is running' in page.text
    assert 'Reset Your Password' not in page.text


def _settings_of(app):
    names = ('DEBUG', 'TESTING', 'MAIL_SUPPRESS_SEND', 'MAIL_SERVER', 'MAIL_PORT')
    return {name: app.config[name] for name in names} | {
        'SECRET_KEY': None,
        'SERVER_NAME': None,
        'PREFERRED_URL_SCHEME': None,
        'SESSION_COOKIE_SECURE': None,
    }


def test_an_unknown_message_is_not_found(debug_app, sink):
    client = debug_app.test_client()
    for path in ('/_mail/no-such-key', '/_mail/no-such-key/html', '/_mail/no-such-key/raw'):
        assert client.get(path).status_code == 404


def test_the_inbox_is_never_there_outside_debug_mode(make_app, sink_port):
    app = make_app(MAIL_SUPPRESS_SEND=False, MAIL_SERVER='127.0.0.1', MAIL_PORT=sink_port)
    assert not app.debug
    running = MailSink('127.0.0.1', sink_port, sink_folder(app, sink_port)).start()
    try:
        request_a_reset(app)
        client = app.test_client()
        for path in ('/_mail', '/_mail/', '/_mail/anything', '/_mail/anything/html'):
            assert client.get(path).status_code == 404, path
        assert '/_mail' not in client.get('/login').text
    finally:
        running.stop()


def test_the_sink_runs_a_command_while_it_serves(debug_app, sink_port):
    # What `make run` does: the app runs under the sink, which stops with it.
    send = (
        'import smtplib\n'
        f'with smtplib.SMTP("127.0.0.1", {sink_port}) as smtp:\n'
        '    smtp.sendmail("a@example.com", ["b@example.com"],\n'
        '                  "To: b@example.com\\r\\nSubject: Hello\\r\\n\\r\\nHi\\r\\n")\n'
    )
    runner = debug_app.test_cli_runner()
    args = ['mail', 'sink', '--port', str(sink_port), '--', sys.executable, '-c', send]
    result = runner.invoke(args=args)
    assert result.exit_code == 0, result.output
    assert '  Microblog        http://127.0.0.1:5000/' in result.output
    assert '  Its emails       http://127.0.0.1:5000/_mail' in result.output
    assert "Mail to b@example.com: 'Hello'  http://127.0.0.1:5000/_mail/" in result.output
    with pytest.raises(OSError):  # the sink stopped with the command
        smtplib.SMTP('127.0.0.1', sink_port, timeout=2)


def test_the_sink_on_a_taken_port_says_so_in_one_line(debug_app, sink_port):
    with socket.create_server(('127.0.0.1', sink_port)):
        result = debug_app.test_cli_runner().invoke(
            args=['mail', 'sink', '--port', str(sink_port), '--', sys.executable, '-c', 'pass']
        )
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f'Error: 127.0.0.1:{sink_port} is taken (another mail sink?): stop what uses it, or '
        f'choose another port, as in `flask mail sink --port {sink_port + 1}` or '
        f'`make run MAIL_PORT={sink_port + 1}`.'
    ]


# The app's reloader exits at once on SIGTERM; the server it started may take a moment.
LINGERING_SERVER = """
import pathlib, signal, subprocess, sys, time
if sys.argv[1:] == ['server']:
    def finish(signum, frame):
        time.sleep(1)  # a request still being answered
        pathlib.Path(sys.argv[0] + '.done').touch()
        sys.exit(0)
    signal.signal(signal.SIGTERM, finish)
    pathlib.Path(sys.argv[0] + '.ready').touch()
    time.sleep(60)
else:
    subprocess.Popen([sys.executable, sys.argv[0], 'server'])
    time.sleep(60)
"""


def test_after_ctrl_c_the_sink_returns_only_once_the_served_app_has_ended(tmp_path, monkeypatch):
    script = tmp_path / 'reloader.py'
    script.write_text(LINGERING_SERVER)
    ready = tmp_path / 'reloader.py.ready'
    threading.Thread(target=_interrupt_when, args=(ready,), daemon=True).start()
    previous = signal.signal(signal.SIGTERM, mail_cli._interrupt)
    try:
        assert mail_cli.run_while_serving([sys.executable, str(script)]) == 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert (tmp_path / 'reloader.py.done').exists()  # its server had finished


def _interrupt_when(ready):
    """SIGTERM to this process, as `make run` gets from Ctrl-C, once ``ready`` exists."""
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)
