"""`make run` in a fresh clone: its banner, the reset email in the browser inbox, a taken port."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.checkout import clean_env, fresh_checkout
from tests.conftest import PASSWORD
from tests.liveserver import Visitor
from tests.mailserver import free_port

pytestmark = pytest.mark.skipif(shutil.which('make') is None, reason='make is not installed')

VENV = Path(sys.executable).parents[1]
DEADLINE = 30  # seconds for the site to answer, and for an email to reach the inbox


def make_run(folder, port, mail_port, log):
    """`make run` with these ports, on the project's virtualenv (nothing to install)."""
    return subprocess.Popen(
        [
            'make',
            '--no-print-directory',
            'run',
            f'PORT={port}',
            f'MAIL_PORT={mail_port}',
            f'VENV={VENV}',
            '-o',
            f'{VENV}/.installed',  # installed already: never reinstall into it
        ],
        cwd=folder,
        env=clean_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, which the test stops as Ctrl-C would
    )


def wait_until(condition, what):
    """Poll ``condition`` until it is true, for at most DEADLINE seconds."""
    end = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f'{what} did not happen in {DEADLINE} s')
        time.sleep(0.1)


def answers(url):
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except (urllib.error.URLError, ConnectionError):
        return False


def stop(process):
    """Stop `make run` as Ctrl-C in its terminal does: SIGINT to its process group."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)


def test_make_run_shows_the_reset_email_in_the_browser_inbox(tmp_path):
    checkout = fresh_checkout(tmp_path / 'microblog')
    port, mail_port = free_port(), free_port()
    site = f'http://127.0.0.1:{port}'
    log_path = tmp_path / 'make-run.log'
    with open(log_path, 'w') as log:
        process = make_run(checkout, port, mail_port, log)
        try:
            wait_until(lambda: answers(site + '/login') or process.poll() is not None, 'serving')
            assert process.poll() is None, log_path.read_text()
            output = log_path.read_text()
            assert f'  Microblog        {site}/\n' in output
            assert f'  Its emails       {site}/_mail\n' in output
            assert f'  Mail sink        127.0.0.1:{mail_port}' in output
            assert 'FLASK_DEBUG=1' not in output  # no echoed commands above the banner
            assert 'alembic' not in output

            susan = Visitor(site)
            assert susan.submit(
                '/register',
                username='susan',
                email='susan@example.com',
                password=PASSWORD,
                password2=PASSWORD,
            ) == (302, '/login')
            assert susan.submit('/reset_password_request', email='susan@example.com')[0] == 302

            def inbox_has_it():
                return 'Reset Your Password' in susan.get('/_mail')[1]

            wait_until(inbox_has_it, 'the reset email reaching /_mail')
            inbox = susan.get('/_mail')[1]
            key = re.search(r'href="/_mail/([^"/]+)"', inbox)[1]
            message = susan.get(f'/_mail/{key}')[1]
            link = re.search(rf'<a href="{re.escape(site)}(/reset_password/[^"]+)">', message)[1]
            status, form = susan.get(link)
            assert status == 200 and 'Set New Password' in form
            assert 'Mail to susan@example.com: ' in log_path.read_text()
        finally:
            stop(process)
    assert process.returncode is not None
    assert not answers(site + '/login')
    assert not (checkout / 'instance' / f'mail-sink-{mail_port}').exists()


def test_make_run_stops_at_once_when_the_mail_port_is_taken(tmp_path):
    checkout = fresh_checkout(tmp_path / 'microblog')
    port, mail_port = free_port(), free_port()
    log_path = tmp_path / 'make-run.log'
    with socket.create_server(('127.0.0.1', mail_port)), open(log_path, 'w') as log:
        process = make_run(checkout, port, mail_port, log)
        try:
            process.wait(60)
        finally:
            stop(process)
    output = log_path.read_text()
    assert process.returncode != 0
    assert (
        f'Error: 127.0.0.1:{mail_port} is taken (another mail sink?): stop what uses it, or '
        f'choose another port, as in `flask mail sink --port {mail_port + 1}` or '
        f'`make run MAIL_PORT={mail_port + 1}`.'
    ) in output
    assert 'Traceback' not in output
    assert not answers(f'http://127.0.0.1:{port}/login')  # the app did not run without mail
