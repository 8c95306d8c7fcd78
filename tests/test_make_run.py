"""`make run` in a fresh clone: its banner, the reset email in the browser inbox, a taken port."""

import re
import shutil
import smtplib
import socket

import pytest

from tests.checkout import fresh_checkout
from tests.helpers import PASSWORD
from tests.liveserver import DevSite, Visitor, answers, wait_for

pytestmark = pytest.mark.skipif(shutil.which('make') is None, reason='make is not installed')


def test_make_run_shows_the_reset_email_in_the_browser_inbox(tmp_path):
    checkout = fresh_checkout(tmp_path / 'microblog')
    site = DevSite(checkout, tmp_path / 'make-run.log')
    try:
        site.start()
        output = site.log()
        assert f'  Microblog        {site.url}/\n' in output
        assert f'  Its emails       {site.url}/_mail\n' in output
        assert f'  Mail sink        127.0.0.1:{site.mail_port}' in output
        assert 'FLASK_DEBUG=1' not in output  # no echoed commands around the banner
        assert 'alembic' not in output
        assert output.count('Microblog startup') == 1  # the serving process, not the reloader

        susan = Visitor(site.url)
        assert susan.submit(
            '/register',
            username='susan',
            email='susan@example.com',
            password=PASSWORD,
            password2=PASSWORD,
        ) == (302, '/login')
        assert susan.submit('/reset_password_request', email='susan@example.com')[0] == 302
        wait_for(lambda: 'Reset Your Password' in susan.get('/_mail')[1], 'the email in /_mail')
        # Registering sent a confirmation too, and either may be the newest.
        key = re.search(
            r'href="/_mail/([^"/]+)">\s*<span class="mail-subject">\[Microblog\] Reset Your',
            susan.get('/_mail')[1],
        )[1]
        message = susan.get(f'/_mail/{key}')[1]
        link = re.search(rf'<a href="{re.escape(site.url)}(/reset_password/[^"]+)">', message)[1]
        status, form = susan.get(link)
        assert status == 200 and 'Set New Password' in form
        assert 'Mail to susan@example.com: ' in site.log()
    finally:
        site.stop()
    assert site.process.returncode is not None
    # Ctrl-C ends the app and the sink, not `make` alone.
    stopped = f'stopped in {site.stop_seconds:.1f} s, killed: {site.killed}'
    assert not site.left_behind, (stopped, site.left_behind, site.log()[-3000:])
    assert not site.killed, (stopped, site.log()[-3000:])
    assert not answers(site.url + '/login')
    with pytest.raises(OSError):
        smtplib.SMTP('127.0.0.1', site.mail_port, timeout=2)
    assert not (checkout / 'instance' / f'mail-sink-{site.mail_port}').exists()


def test_make_run_stops_at_once_when_the_mail_port_is_taken(tmp_path):
    site = DevSite(fresh_checkout(tmp_path / 'microblog'), tmp_path / 'make-run.log')
    with socket.create_server(('127.0.0.1', site.mail_port)):
        try:
            status = site.start(wait=False).wait()
        finally:
            site.stop()
    output = site.log()
    assert status != 0
    assert (
        f'Error: 127.0.0.1:{site.mail_port} is taken (another mail sink?): stop what uses it, '
        f'or choose another port, as in `flask mail sink --port {site.mail_port + 1}` or '
        f'`make run MAIL_PORT={site.mail_port + 1}`.'
    ) in output
    assert 'Traceback' not in output
    assert not answers(site.url + '/login')  # the app did not run on without mail
