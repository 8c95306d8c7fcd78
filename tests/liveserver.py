"""The app served by gunicorn in a process of its own, as in production."""

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tests.checkout import BIN, ROOT, clean_env, flask
from tests.mailserver import free_port

START_DEADLINE = 30  # seconds for gunicorn to answer its first request


class LiveServer:
    """gunicorn serving ``microblog:app`` from ``folder``, its output kept in a log file."""

    def __init__(self, log_path, folder=ROOT, workers=1, **settings):
        self.port = free_port()
        self.folder = Path(folder)
        self.log_path = Path(log_path)
        self.settings = {
            'FLASK_DEBUG': '0',
            'SECRET_KEY': 'live-server-secret-key-that-is-long-enough-0123',
            'SERVER_NAME': f'127.0.0.1:{self.port}',
            'LOG_TO_STDOUT': '1',
            **settings,
        }
        self.workers = workers
        self.process = None

    @property
    def url(self):
        return f'http://127.0.0.1:{self.port}'

    def upgrade(self):
        """`flask db upgrade` with the server's settings."""
        result = flask(self.folder, 'db', 'upgrade', **self.settings)
        assert result.returncode == 0, result.stderr
        return self

    def start(self):
        """Start gunicorn and return once it answers, or fail with its log."""
        self._log = open(self.log_path, 'w')  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            [
                str(BIN / 'gunicorn'),
                '-w',
                str(self.workers),
                '--threads',
                '4',
                '-b',
                f'127.0.0.1:{self.port}',
                'microblog:app',
            ],
            cwd=self.folder,
            env=clean_env(**self.settings),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_DEADLINE
        while True:
            try:
                with urllib.request.urlopen(self.url + '/login', timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:  # not listening yet, or too busy to answer in time
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(self.log())
            time.sleep(0.05)

    def stop(self):
        """Stop gunicorn (SIGTERM to its PID) and wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(15)
        if self.process is not None:
            self._log.close()
            self.process = None

    def log(self):
        """What the server wrote so far."""
        return self.log_path.read_text()


def _interruptible():
    """In a child about to run a command: let SIGINT end it, as a terminal's Ctrl-C does."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class DevSite:
    """`make run` in ``folder``, on the project's virtualenv: the site as a developer runs it."""

    def __init__(self, folder, log_path):
        self.folder = Path(folder)
        self.log_path = Path(log_path)
        self.port = free_port()
        self.mail_port = free_port()
        self.process = None
        # Every process that `make run` starts inherits this, so that what outlives it can
        # be found (and ended) whatever its process group.
        self.marker = f'{self.port}-{os.getpid()}-{time.monotonic_ns()}'
        self.left_behind = []
        self.killed = False  # whether Ctrl-C was not enough, and the group was killed
        self.stop_seconds = None

    @property
    def url(self):
        return f'http://127.0.0.1:{self.port}'

    def start(self, wait=True):
        """Run `make run` (nothing to install) and, with ``wait``, return once the site answers."""
        venv = Path(sys.executable).parents[1]
        self._log = open(self.log_path, 'w')  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            [
                'make',
                '--no-print-directory',
                'run',
                f'PORT={self.port}',
                f'MAIL_PORT={self.mail_port}',
                f'VENV={venv}',
                '-o',
                f'{venv}/.installed',  # installed already: never reinstall into it
            ],
            cwd=self.folder,
            env=clean_env(MICROBLOG_TEST_SITE=self.marker),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a process group of its own, stopped as Ctrl-C would
            # As in a terminal, where Ctrl-C reaches a job in the foreground: a suite run
            # in the background (`make test &`, nohup, CI runners) starts with SIGINT
            # ignored, and every process inherits that, so `make run` would not stop.
            preexec_fn=_interruptible,
        )
        if wait:
            wait_for(lambda: answers(self.url + '/login') or self.process.poll() is not None)
            if self.process.poll() is not None:
                raise RuntimeError(self.log())
        return self

    def wait(self, timeout=60):
        """Wait for `make run` to end by itself; its exit status."""
        return self.process.wait(timeout)

    def stop(self):
        """Stop it as Ctrl-C in its terminal does: SIGINT to its process group."""
        if self.process is None:
            return
        started = time.monotonic()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.killed = True
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(30)
        self.stop_seconds = time.monotonic() - started
        self._log.close()
        # What outlived `make run` is recorded for the test to report, and ended here so
        # that it holds no port after the test.
        self.left_behind = self._still_running()
        for pid, _ in self.left_behind:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _still_running(self):
        """(pid, command line) of each process started by this `make run` still running."""
        needle = f'MICROBLOG_TEST_SITE={self.marker}'.encode()
        found = []
        for entry in Path('/proc').iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if needle not in (entry / 'environ').read_bytes().split(b'\0'):
                    continue
                command = (entry / 'cmdline').read_bytes().replace(b'\0', b' ').decode()
            except OSError:  # ended meanwhile, or not ours to read
                continue
            found.append((int(entry.name), command.strip()))
        return found

    def log(self):
        """What `make run` printed so far."""
        return self.log_path.read_text()


def answers(url):
    """Whether an HTTP server answers at ``url`` (with any status)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError as error:
        error.close()
        return True
    except OSError:  # refused, reset, or no answer in time
        return False


def wait_for(condition, what='the condition', deadline=START_DEADLINE):
    """Poll ``condition`` until it is true, for at most ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f'{what} did not happen in {deadline} s')
        time.sleep(0.1)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """Hand redirects back to the caller, who follows them as a browser would."""

    def redirect_request(self, *args, **kwargs):
        return None


class Visitor:
    """A person with a browser on a live server: cookies kept, forms sent with their CSRF token.

    ``headers`` go with every request: behind a TLS proxy, ``X-Forwarded-Proto: https``
    (the cookies are then Secure, and kept here as the browser keeps them for https).
    """

    def __init__(self, base_url, headers=None):
        self.base_url = base_url
        self.headers = dict(headers or {})
        self.cookies = {}
        self.opener = urllib.request.build_opener(NoRedirect)
        base = urllib.parse.urlsplit(base_url)
        scheme = self.headers.get('X-Forwarded-Proto', base.scheme)
        self.origin = f'{scheme}://{self.headers.get("Host", base.netloc)}'

    def request(self, path, data=None):
        """GET (or POST ``data``) ``path``: status, Location header and page text."""
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(self.base_url + path, data=body, headers=self.headers)
        if body is not None:
            # As a browser does, on the page the form came from (Flask-WTF checks it on https).
            request.add_header('Origin', self.origin)
            request.add_header('Referer', self.origin + path)
        if self.cookies:
            cookies = '; '.join(f'{name}={value}' for name, value in self.cookies.items())
            request.add_header('Cookie', cookies)
        try:
            response = self.opener.open(request, timeout=15)
        except urllib.error.HTTPError as error:
            response = error
        with response:
            for header in response.headers.get_all('Set-Cookie') or []:
                name, value = header.split(';', 1)[0].split('=', 1)
                self.cookies[name] = value
            return response.status, response.headers.get('Location'), response.read().decode()

    def get(self, path):
        """The page at ``path`` (200 expected), following redirects on this site."""
        for _ in range(5):
            status, location, text = self.request(path)
            if status not in (301, 302, 303, 307, 308):
                return status, text
            path = urllib.parse.urlsplit(location)._replace(scheme='', netloc='').geturl()
        raise AssertionError(f'too many redirects from {path}')

    def submit(self, path, **fields):
        """Fill in the form at ``path`` and send it: status and Location of the answer."""
        status, form = self.get(path)
        assert status == 200, form
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', form)
        if token:
            fields['csrf_token'] = token[1]
        status, location, _ = self.request(path, data=fields)
        return status, location
