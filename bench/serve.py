"""Shared by the benchmarks: run Microblog under gunicorn on 127.0.0.1, and time requests."""

import http.cookiejar
import os
import random
import re
import shlex
import signal
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


def seed_accounts(env, users):
    """`flask seed` ``users`` accounts with a random seed, so that their addresses are this
    run's alone (other programs on the machine may run benchmarks with their own sinks)."""
    flask(
        env,
        'seed',
        '--users',
        str(users),
        '--posts',
        '0',
        '--follows',
        '0',
        '--seed',
        str(random.randrange(10**9)),
    )


def flask(env, *args):
    """Run a flask command in the project with this environment."""
    subprocess.run(
        [str(BIN / 'flask'), *args], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL
    )


class Server:
    """gunicorn serving microblog:app until stop()."""

    def __init__(
        self, env, port, workers=1, threads=4, log=os.devnull, app='microblog:app', options=()
    ):
        self.base = f'http://127.0.0.1:{port}'
        self.log = open(log, 'w')  # noqa: SIM115 - closed in stop()
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
                *options,
                app,
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_until_ready(deadline=time.monotonic() + 30)
        except BaseException:
            self.stop(grace=5)
            raise

    def _wait_until_ready(self, deadline):
        # Other programs on this machine pick free ports too: make sure the port is this
        # gunicorn's (its master holds the listening socket) before sending it anything.
        while not self.owns_port():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f'gunicorn did not get {self.base}')
            time.sleep(0.1)
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.base + '/login', timeout=5):
                    return
            except OSError:  # refused, reset or timed out while the workers start
                time.sleep(0.1)
        raise RuntimeError('the server did not start')

    def owns_port(self):
        """Whether the socket listening on 127.0.0.1:<port> is held by this gunicorn's master."""
        port = int(self.base.rsplit(':', 1)[1])
        listening = set()
        for line in Path('/proc/net/tcp').read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == f'0100007F:{port:04X}' and fields[3] == '0A':
                listening.add(f'socket:[{fields[9]}]')
        try:
            held = {os.readlink(fd) for fd in Path(f'/proc/{self.process.pid}/fd').iterdir()}
        except OSError:
            return False
        return bool(listening & held)

    def worker_pids(self):
        children = Path(f'/proc/{self.process.pid}/task/{self.process.pid}/children')
        return [int(pid) for pid in children.read_text().split()]

    def stop(self, grace=15):
        """Stop gunicorn and its workers, by their PIDs, waiting at most ``grace`` + 5 s.

        A worker in the middle of a delivery pass finishes it first (up to MAIL_TIMEOUT + 5 s):
        a benchmark that leaves a slow pass behind stops with a short ``grace``.
        """
        try:
            workers = self.worker_pids()
        except OSError:
            workers = []
        self.process.terminate()
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        for pid in workers:
            # A worker still finishing a delivery pass when the master is gone.
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
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

_CSRF_TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


class Browser:
    """A visitor with a cookie jar, who reads a form (and its CSRF token) before posting it."""

    def __init__(self):
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _NoRedirect
        )

    def form(self, url):
        """GET a form page; its CSRF token, or None when CSRF protection is off."""
        with self.opener.open(url, timeout=30) as response:
            found = _CSRF_TOKEN.search(response.read().decode())
        return found[1] if found else None

    def submit(self, url, data):
        """GET the form, then POST it with its token; (status, seconds) of the POST alone."""
        token = self.form(url)
        return post(url, {**data, 'csrf_token': token} if token else data, self.opener)


def command_line():
    """The command that was run, as typed from the project root."""
    python = Path(sys.executable)
    if python.is_relative_to(ROOT):
        python = python.relative_to(ROOT)
    return shlex.join([str(python), *sys.argv])


def percentiles(samples):
    """Median and 99th percentile, in milliseconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p99 * 1000


def quantile(samples, q):
    """The ``q`` quantile (nearest rank) of ``samples``, in milliseconds."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


def auc(slower, faster):
    """Mann-Whitney AUC: the probability that a sample of ``slower`` exceeds one of ``faster``.

    Ties count one half; 0.5 means the two cannot be told apart by time.
    """
    wins = 0.0
    for a in slower:
        for b in faster:
            wins += 1.0 if a > b else 0.5 if a == b else 0.0
    return wins / (len(slower) * len(faster))


import urllib.parse  # noqa: E402
