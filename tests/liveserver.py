"""The app served by gunicorn in a process of its own, as in production."""

import subprocess
import time
import urllib.error
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
            except (urllib.error.URLError, ConnectionError):
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
