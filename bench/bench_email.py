"""Email figures: page latency against a slow SMTP server, threads under a burst, send rate.

.venv/bin/python bench/bench_email.py
"""

import asyncio
import concurrent.futures
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiosmtpd.controller import Controller  # noqa: E402

from bench.serve import Server, app_env, flask, free_port, percentiles, post  # noqa: E402

REQUESTS = 150
BURST = 200
MESSAGES = 500


class Sink:
    """An SMTP sink that takes ``delay`` seconds per message."""

    def __init__(self, delay):
        self.delay = delay
        self.received = 0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.delay:
            await asyncio.sleep(self.delay)
        self.received += 1
        return '250 OK'


def start_sink(delay):
    port = free_port()
    sink = Sink(delay)
    controller = Controller(sink, hostname='127.0.0.1', port=port)
    controller.start()
    return sink, controller, port


def reset_latency(delay, workdir):
    sink, controller, smtp_port = start_sink(delay)
    port = free_port()
    env = app_env(
        port,
        f'sqlite:///{workdir}/latency-{delay}.db',
        MAIL_SERVER='127.0.0.1',
        MAIL_PORT=smtp_port,
    )
    flask(env, 'db', 'upgrade')
    flask(env, 'seed', '--users', '20', '--posts', '0', '--follows', '0')
    server = Server(env, port)
    try:
        samples = []
        for number in range(REQUESTS):
            status, seconds = post(
                server.base + '/reset_password_request',
                {'email': f'someone{number % 20}@example.com'},
            )
            assert status == 302, status
            samples.append(seconds)
    finally:
        server.stop()
        controller.stop()
    return percentiles(samples)


def burst_threads(workdir):
    sink, controller, smtp_port = start_sink(1.0)
    port = free_port()
    env = app_env(
        port, f'sqlite:///{workdir}/burst.db', MAIL_SERVER='127.0.0.1', MAIL_PORT=smtp_port
    )
    flask(env, 'db', 'upgrade')
    server = Server(env, port, workers=1, threads=4)
    worker = server.worker_pids()[0]
    peak = 0
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            status = Path(f'/proc/{worker}/status').read_text()
            threads = int(
                next(line for line in status.splitlines() if line.startswith('Threads:')).split()[1]
            )
            peak = max(peak, threads)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(BURST) as pool:
            statuses = list(
                pool.map(
                    lambda n: post(
                        server.base + '/reset_password_request', {'email': f'burst{n}@example.com'}
                    )[0],
                    range(BURST),
                )
            )
    finally:
        done.set()
        sampler.join()
        server.stop()
        controller.stop()
    return peak, statuses.count(302)


def send_rate(batch_size, workdir):
    from app.email import deliver_pending, store_email

    from app import create_app, db
    from tests.conftest import TestConfig

    sink, controller, smtp_port = start_sink(0)
    settings = type(
        'Bench',
        (TestConfig,),
        {
            'SQLALCHEMY_DATABASE_URI': f'sqlite:///{workdir}/rate-{batch_size}.db',
            'MAIL_SUPPRESS_SEND': False,
            'MAIL_SERVER': '127.0.0.1',
            'MAIL_PORT': smtp_port,
            'MAIL_QUEUE': 'none',
            'MAIL_BATCH_SIZE': batch_size,
        },
    )
    app = create_app(settings)
    with app.app_context():
        db.create_all()
        for number in range(MESSAGES):
            store_email(
                f'rate {number}',
                'no-reply@example.com',
                [f'r{number}@example.com'],
                'text body',
                '<p>html body</p>',
            )
        db.session.commit()
        start = time.perf_counter()
        sent = 0
        while sent < MESSAGES:
            sent += len(deliver_pending().sent)
        seconds = time.perf_counter() - start
    controller.stop()
    return MESSAGES / seconds


def main():
    with tempfile.TemporaryDirectory() as workdir:
        fast = reset_latency(0, workdir)
        slow = reset_latency(1.0, workdir)
        peak, ok = burst_threads(workdir)
        batched = send_rate(50, workdir)
        single = send_rate(1, workdir)
    print(
        'POST /reset_password_request, gunicorn -w 1 --threads 4, SQLite, '
        f'{REQUESTS} sequential requests'
    )
    print(f'  SMTP answers at once : p50 {fast[0]:6.1f} ms   p99 {fast[1]:6.1f} ms')
    print(f'  SMTP takes 1 s/msg   : p50 {slow[0]:6.1f} ms   p99 {slow[1]:6.1f} ms')
    print(f'  ratio slow/fast      : p50 {slow[0] / fast[0]:.2f}   p99 {slow[1] / fast[1]:.2f}')
    print(f'Burst of {BURST} concurrent reset requests ({ok} answered 302), SMTP 1 s/msg:')
    print(f'  peak threads in the app worker process: {peak}')
    print(f'Delivery of {MESSAGES} messages to a local aiosmtpd sink:')
    print(f'  one connection per batch of 50 : {batched:7.1f} messages/s')
    print(f'  one connection per message     : {single:7.1f} messages/s')
    print(f'  speed-up: {batched / single:.1f}x')
    print('command: .venv/bin/python bench/bench_email.py')


if __name__ == '__main__':
    main()
