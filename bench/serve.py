"""Shared by the benchmarks: run Microblog under gunicorn on 127.0.0.1, and time requests."""

import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def app_env(port, database_url, **extra):
    """The environment of a production-like app process for a benchmark."""
    return {
        **os.environ,
        'FLASK_APP': 'microblog.py',
        'FLASK_DEBUG': '0',
        'SECRET_KEY': 'benchmark-secret-key-that-is-long-enough-0123456789',
        'SERVER_NAME': f'127.0.0.1:{port}',
        'PREFERRED_URL_SCHEME': 'http',
        'SESSION_COOKIE_SECURE': 'false',
        'DATABASE_URL': database_url,
        'RATELIMIT_ENABLED': 'false',
        'WTF_CSRF_ENABLED': 'false',
        'LOG_TO_STDOUT': '1',
        **{key: str(value) for key, value in extra.items()},
    }


def flask(env, *args):
    """Run a flask command in the project with this environment."""
    subprocess.run(
        [str(BIN / 'flask'), *args], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL
    )


class Server:
    """gunicorn serving microblog:app until stop()."""

    def __init__(self, env, port, workers=1, threads=4):
        self.base = f'http://127.0.0.1:{port}'
        self.log = open(os.devnull, 'w')  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable,
                '-m',
                'gunicorn',
                '-w',
                str(workers),
                '--threads',
                str(threads),
                '-b',
                f'127.0.0.1:{port}',
                'microblog:app',
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.base + '/login', timeout=2):
                    return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError('the server did not start')

    def worker_pids(self):
        children = Path(f'/proc/{self.process.pid}/task/{self.process.pid}/children')
        return [int(pid) for pid in children.read_text().split()]

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def post(url, data, opener=None):
    """POST a form; return (status, seconds). Redirects are not followed."""
    body = urllib.parse.urlencode(data).encode()
    request = urllib.request.Request(url, data=body, method='POST')
    start = time.perf_counter()
    try:
        with (opener or NO_REDIRECT).open(request, timeout=30) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    return status, time.perf_counter() - start


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


NO_REDIRECT = urllib.request.build_opener(_NoRedirect)


def percentiles(samples):
    """Median and 99th percentile, in milliseconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p99 * 1000


import urllib.parse  # noqa: E402
