"""Can response time tell who has an account? Reset requests and logins, known against unknown.

.venv/bin/python bench/bench_enumeration.py
"""

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.serve import Server, app_env, flask, free_port, percentiles, post  # noqa: E402

RESETS = 300
LOGINS = 150


def main():
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        env = app_env(port, f'sqlite:///{workdir}/enumeration.db', MAIL_QUEUE='none')
        flask(env, 'db', 'upgrade')
        flask(env, 'seed', '--users', '100', '--posts', '0', '--follows', '0')
        server = Server(env, port, workers=1, threads=1)
        try:
            import sqlite3

            with sqlite3.connect(f'{workdir}/enumeration.db') as connection:
                username, email = connection.execute(
                    'SELECT username, email FROM user LIMIT 1'
                ).fetchone()
            samples = {
                'reset known': [],
                'reset unknown': [],
                'login wrong password': [],
                'login unknown user': [],
            }
            url = server.base
            for number in range(RESETS):
                # Interleaved, so that drift in the machine's speed hits both alike.
                pairs = [('reset known', email), ('reset unknown', f'nobody{number}@example.com')]
                for label, address in pairs if number % 2 else reversed(pairs):
                    status, seconds = post(url + '/reset_password_request', {'email': address})
                    assert status == 302, status
                    samples[label].append(seconds)
            for number in range(LOGINS):
                pairs = [('login wrong password', username), ('login unknown user', 'nobody')]
                for label, name in pairs if number % 2 else reversed(pairs):
                    status, seconds = post(
                        url + '/login', {'username': name, 'password': 'wrong-password'}
                    )
                    assert status == 200, status
                    samples[label].append(seconds)
        finally:
            server.stop()
    print('gunicorn -w 1 --threads 1, SQLite, sequential requests, interleaved')
    print(f'{"request":<24}{"n":>5}{"median ms":>11}{"p99 ms":>9}')
    for label, values in samples.items():
        median, p99 = percentiles(values)
        print(f'{label:<24}{len(values):>5}{median:>11.2f}{p99:>9.2f}')
    for known, unknown in (
        ('reset known', 'reset unknown'),
        ('login wrong password', 'login unknown user'),
    ):
        ratio = percentiles(samples[known])[0] / percentiles(samples[unknown])[0]
        print(f'median {known} / {unknown}: {ratio:.3f}')
    print('command: .venv/bin/python bench/bench_enumeration.py')


if __name__ == '__main__':
    main()
