"""Can response time tell who has an account? Reset requests and logins, known against unknown.

Not a test: it prints figures. It starts gunicorn on 127.0.0.1 (one worker, one thread, so
that requests do not overlap), with RATELIMIT_ENABLED=false and WTF_CSRF_ENABLED=false,
on a fresh SQLite file, and sends interleaved sequential requests:

- POST /reset_password_request for an address with an account and one without, first with
  MAIL_QUEUE=none (the request path alone), then with the in-process delivery thread and a
  local SMTP sink (as in production: the worker shares the process with the requests), where
  it also times the GET that follows each reset request, to see whether the email work done
  in the background for a known address slows the next request down;
- POST /login with a wrong password for an existing username and with an unknown username.

.venv/bin/python bench/bench_enumeration.py [--requests 300]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_email import start_sink  # noqa: E402
from bench.serve import NO_REDIRECT, Server, app_env, flask, free_port, percentiles, post  # noqa: E402


def get(url):
    """GET a page; return seconds."""
    start = time.perf_counter()
    with NO_REDIRECT.open(url, timeout=30) as response:
        response.read()
    return time.perf_counter() - start


def interleaved(count, pairs, measure):
    """Measure both pairs ``count`` times, alternating which goes first; samples by label."""
    samples = {label: [] for label, _ in pairs}
    for number in range(count):
        for label, value in pairs if number % 2 else list(reversed(pairs)):
            samples[label].append(measure(label, value, number))
    return samples


def start_app(workdir, name, **settings):
    """Migrate and seed a database, then serve it; the server and one seeded account."""
    port = free_port()
    database = f'{workdir}/{name}.db'
    env = app_env(port, f'sqlite:///{database}', **settings)
    flask(env, 'db', 'upgrade')
    flask(env, 'seed', '--users', '100', '--posts', '0', '--follows', '0')
    import sqlite3

    with sqlite3.connect(database) as connection:
        account = connection.execute('SELECT username, email FROM user LIMIT 1').fetchone()
    return Server(env, port, workers=1, threads=1), account


def reset_samples(server, email, count, probe=False):
    """Time reset requests (and, with ``probe``, the GET right after each)."""
    probes = {'after known': [], 'after unknown': []}

    def measure(label, address, number):
        if label == 'unknown':
            address = f'nobody{number}@example.com'
        status, seconds = post(server.base + '/reset_password_request', {'email': address})
        assert status == 302, status
        if probe:
            probes[f'after {label}'].append(get(server.base + '/login'))
        return seconds

    samples = interleaved(count, [('known', email), ('unknown', None)], measure)
    return samples, probes


def login_samples(server, username, count):
    def measure(label, name, number):
        status, seconds = post(server.base + '/login', {'username': name, 'password': 'wrong-pw'})
        assert status == 200, status
        return seconds

    return interleaved(count, [('wrong password', username), ('unknown user', 'nobody')], measure)


def report(title, samples, known, unknown):
    print(f'\n{title}')
    print(f'  {"":<32}{"n":>5}{"median ms":>11}{"p99 ms":>9}')
    for label, values in samples.items():
        median, p99 = percentiles(values)
        print(f'  {label:<32}{len(values):>5}{median:>11.2f}{p99:>9.2f}')
    ratio = percentiles(samples[known])[0] / percentiles(samples[unknown])[0]
    print(f'  median {known} / {unknown}: {ratio:.3f}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--requests', type=int, default=300, help='requests of each kind')
    count = parser.parse_args().requests

    with tempfile.TemporaryDirectory() as workdir:
        server, (username, email) = start_app(workdir, 'request-path', MAIL_QUEUE='none')
        try:
            resets, _ = reset_samples(server, email, count)
            logins = login_samples(server, username, count)
        finally:
            server.stop()

        sink, controller, smtp_port = start_sink(0)
        server, (_, email) = start_app(
            workdir, 'with-delivery', MAIL_SERVER='127.0.0.1', MAIL_PORT=smtp_port
        )
        try:
            delivered, probes = reset_samples(server, email, count, probe=True)
        finally:
            server.stop()
            controller.stop()

    print('gunicorn -w 1 --threads 1, SQLite, sequential requests, known and unknown interleaved')
    report(
        'POST /reset_password_request, MAIL_QUEUE=none (request path only)',
        {f'address {k}': v for k, v in resets.items()},
        'address known',
        'address unknown',
    )
    report(
        f'POST /reset_password_request, delivery thread + SMTP sink ({sink.received} emails sent)',
        {f'address {k}': v for k, v in delivered.items()},
        'address known',
        'address unknown',
    )
    report(
        'GET /login right after that reset request',
        {f'{k} address': v for k, v in probes.items()},
        'after known address',
        'after unknown address',
    )
    report('POST /login', logins, 'wrong password', 'unknown user')
    print(f'\ncommand: {Path(sys.executable)} bench/bench_enumeration.py --requests {count}')


if __name__ == '__main__':
    main()
