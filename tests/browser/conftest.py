"""A real server process, a real SMTP server and headless Chromium for the journeys."""

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.checkout import fresh_checkout
from tests.helpers import CHROMIUM, CHROMIUM_FLAGS
from tests.liveserver import DevSite
from tests.mailserver import MailServer, free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / 'test-artifacts' / 'screenshots'


def _browser_missing():
    if not os.path.exists(CHROMIUM):
        return f'Chromium is not installed at {CHROMIUM} (apt-get install chromium)'
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return 'Playwright for Python is not installed'
    return None


def pytest_collection_modifyitems(config, items):
    reason = _browser_missing()
    for item in items:
        if 'tests/browser' not in str(item.fspath):
            continue
        item.add_marker(pytest.mark.browser)
        if reason and os.environ.get('REQUIRE_BROWSER') != '1':
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope='session')
def mail_server():
    """The SMTP server the app sends to; tests read the emails from it."""
    server = MailServer().start()
    yield server
    server.stop()


@pytest.fixture(scope='session')
def live_server(tmp_path_factory, mail_server):
    """The app served by gunicorn on 127.0.0.1, on a fresh SQLite database."""
    port = free_port()
    database = tmp_path_factory.mktemp('live') / 'browser.db'
    env = {
        **os.environ,
        'FLASK_APP': 'microblog.py',
        'FLASK_DEBUG': '0',
        'SECRET_KEY': 'browser-test-secret-key-that-is-long-enough-0123',
        'SERVER_NAME': f'127.0.0.1:{port}',
        'PREFERRED_URL_SCHEME': 'http',
        'SESSION_COOKIE_SECURE': 'false',
        'DATABASE_URL': f'sqlite:///{database}',
        'MAIL_SERVER': '127.0.0.1',
        'MAIL_PORT': str(mail_server.port),
        'MAIL_USE_TLS': 'false',
        'MAIL_USE_SSL': 'false',
        'MAIL_DEFAULT_SENDER': 'no-reply@example.com',
        'MAIL_QUEUE': 'thread',
        'RATELIMIT_ENABLED': 'false',
        'LOG_TO_STDOUT': '1',
    }
    bindir = Path(sys.executable).parent
    subprocess.run(
        [str(bindir / 'flask'), 'db', 'upgrade'],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    log = open(database.parent / 'server.log', 'w')  # noqa: SIM115 - closed at teardown
    process = subprocess.Popen(
        [
            sys.executable,
            '-m',
            'gunicorn',
            '-w',
            '1',
            '--threads',
            '4',
            '-b',
            f'127.0.0.1:{port}',
            'microblog:app',
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f'http://127.0.0.1:{port}'
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(base + '/login', timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:  # refused, reset, or slower than 2 s on a busy machine
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            log.close()
            raise RuntimeError((database.parent / 'server.log').read_text())
        time.sleep(0.1)
    yield base
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture(scope='session')
def dev_site(tmp_path_factory):
    """`make run` in a fresh clone: debug mode, the local mail sink and its inbox at /_mail."""
    folder = tmp_path_factory.mktemp('dev')
    site = DevSite(fresh_checkout(folder / 'microblog'), folder / 'make-run.log').start()
    yield site
    site.stop()


@pytest.fixture(scope='session')
def browser(tmp_path_factory):
    """Headless Debian Chromium driven by Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server):
    """A fresh browser context (no cookies) with a page on the live server."""
    context = browser.new_context(base_url=live_server, viewport={'width': 1000, 'height': 700})
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


class Camera:
    """Saves numbered full-page screenshots of a journey under test-artifacts/."""

    def __init__(self, name):
        self.folder = ARTIFACTS / name
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.count = 0

    def shoot(self, page, label):
        self.count += 1
        page.screenshot(path=self.folder / f'{self.count:02d}-{label}.png', full_page=True)


@pytest.fixture
def camera(request):
    """Screenshots for this journey."""
    return Camera(request.node.name.replace('[', '-').replace(']', ''))
