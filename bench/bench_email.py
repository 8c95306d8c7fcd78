"""Email figures: delivery time to a slow SMTP server, page latency, threads, send rate.

Not a test: it prints figures. Every part starts what it measures (aiosmtpd sinks and
gunicorn on 127.0.0.1, fresh SQLite files in a temporary folder) and stops it again.

- delivery: 100 users each ask for a reset link (GET the form, POST it with its CSRF token,
  one after the other) from gunicorn ``-w 2`` (sync workers) with the default settings but
  RATELIMIT_ENABLED=false: the delivery thread of each worker (every MAIL_POLL_INTERVAL = 3 s,
  MAIL_CONNECTIONS = 5 connections, claims of at most MAIL_BATCH_SIZE = 10) sends to an SMTP server
  that takes 1 s per message and serves its connections in parallel. Timed from the first
  request to the 100th message received; then again with MAIL_CONNECTIONS=1, with
  MAIL_BATCH_SIZE=1 (each connection claims one message at a time), and with both
  MAIL_BATCH_SIZE=1 and MAIL_CONNECTIONS=8.
- latency: POST /reset_password_request (gunicorn ``-w 1 --threads 4``) while the delivery
  thread of the same process sends the reset emails of 20 accounts, to an SMTP server that
  answers at once and to one that takes 1 s per message; requests are paced to span several
  cadences of the delivery thread.
- burst: the peak number of threads in the worker process (``-w 1 --threads 4``) while 200
  concurrent reset requests are served and the delivery pass they cause has begun.
- rate: messages per second from the outbox to a local sink answering at once, in process
  (``deliver_pending``), 500 messages, with 5 connections and with 1.

    .venv/bin/python bench/bench_email.py [--only delivery,latency,burst,rate]
"""

import argparse
import asyncio
import concurrent.futures
import random
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiosmtpd.controller import Controller  # noqa: E402

from bench.serve import (  # noqa: E402
    Browser,
    Server,
    app_env,
    command_line,
    flask,
    free_port,
    percentiles,
    post,
    seed_accounts,
)

MESSAGES = 100  # delivery: reset requests, one per seeded account
DELIVERY_LIMIT = 180  # seconds the 100 messages may take before the run gives up
REQUESTS = 150  # latency: sequential reset requests per SMTP server
PACE = 0.06  # latency: seconds between requests, so that a run spans two cadences or more
BURST = 200  # burst: concurrent reset requests
RATE_MESSAGES = 500  # rate: messages delivered in process
PARTS = ('delivery', 'latency', 'burst', 'rate')


class Sink:
    """An SMTP server that takes ``delay`` seconds per message, many connections at once."""

    def __init__(self, delay):
        self.delay = delay
        self.accounts = set()  # this run's addresses: other programs may find this port too
        # (time.monotonic(), recipients, the client's address) as each message is accepted
        self.received = []
        self.in_flight = 0
        self.peak_in_flight = 0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        if not self.accounts.intersection(envelope.rcpt_tos):
            return "550 not one of this benchmark's accounts"
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)  # the event loop serves the other connections
        finally:
            self.in_flight -= 1
        self.received.append((time.monotonic(), tuple(envelope.rcpt_tos), session.peer))
        return '250 OK'


def start_sink(delay):
    port = free_port()
    sink = Sink(delay)
    sink.port = port
    controller = Controller(sink, hostname='127.0.0.1', port=port)
    controller.start()
    return sink, controller


def serve(workdir, name, sink, users, workers, threads, **settings):
    """Migrate and seed a fresh database and serve it; the server and the seeded addresses."""
    port = free_port()
    database = f'{workdir}/{name}.db'
    env = app_env(
        port, f'sqlite:///{database}', MAIL_SERVER='127.0.0.1', MAIL_PORT=sink.port, **settings
    )
    flask(env, 'db', 'upgrade')
    seed_accounts(env, users)
    with sqlite3.connect(database) as connection:
        addresses = [row[0] for row in connection.execute('SELECT email FROM user ORDER BY id')]
    sink.accounts = set(addresses)
    return Server(env, port, workers=workers, threads=threads), addresses


def delivery(workdir, name, **settings):
    """100 reset requests for 100 accounts; when each message reached the slow server."""
    sink, controller = start_sink(1.0)
    try:
        server, addresses = serve(
            workdir, name, sink, MESSAGES, 2, 1, WTF_CSRF_ENABLED='true', **settings
        )
        try:
            browser = Browser()
            url = server.base + '/reset_password_request'
            start = time.monotonic()
            for address in addresses:
                status, _ = browser.submit(url, {'email': address})
                assert status == 302, status
            asked = time.monotonic() - start
            while len(sink.received) < MESSAGES and time.monotonic() - start < DELIVERY_LIMIT:
                time.sleep(0.05)
            arrivals = sorted(when - start for when, _, _ in sink.received)
            recipients = {rcpt for _, rcpts, _ in sink.received for rcpt in rcpts}
            connections = {}
            for when, _, peer in sink.received:
                connections.setdefault(peer, []).append(when - start)
        finally:
            server.stop(grace=5)
    finally:
        controller.stop()
    return {
        'requests': asked,
        'arrivals': arrivals,
        'accounts reached': len(recipients & set(addresses)),
        'peak connections': sink.peak_in_flight,
        'connections': sorted(connections.values()),
    }


def reset_latency(delay, workdir):
    """Reset requests while the same process delivers emails to a server taking ``delay`` s."""
    sink, controller = start_sink(delay)
    try:
        server, addresses = serve(
            workdir, f'latency-{delay}', sink, 20, 1, 4, WTF_CSRF_ENABLED='true'
        )
        try:
            browser = Browser()
            url = server.base + '/reset_password_request'
            samples = []
            for number in range(REQUESTS):
                status, seconds = browser.submit(url, {'email': addresses[number % 20]})
                assert status == 302, status
                samples.append(seconds)
                time.sleep(PACE)
            sent = len(sink.received)
        finally:
            server.stop(grace=5)
    finally:
        controller.stop()
    return (*percentiles(samples), sent)


def burst_threads(workdir):
    """Peak threads in the worker while a burst is served and the pass it causes sends."""
    sink, controller = start_sink(1.0)
    try:
        server, addresses = serve(workdir, 'burst', sink, BURST, 1, 4)
        try:
            worker = server.worker_pids()[0]
            peak = 0
            done = threading.Event()

            def sample():
                nonlocal peak
                while not done.is_set():
                    status = Path(f'/proc/{worker}/status').read_text()
                    line = next(row for row in status.splitlines() if row.startswith('Threads:'))
                    peak = max(peak, int(line.split()[1]))
                    time.sleep(0.005)

            sampler = threading.Thread(target=sample)
            sampler.start()
            try:
                url = server.base + '/reset_password_request'
                with concurrent.futures.ThreadPoolExecutor(BURST) as pool:
                    statuses = list(pool.map(lambda a: post(url, {'email': a})[0], addresses))
                # Until the pass has sent on every connection (or two cadences have gone by).
                deadline = time.monotonic() + 12
                while len(sink.received) < 4 and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(0.5)
            finally:
                done.set()
                sampler.join()
        finally:
            server.stop(grace=3)
    finally:
        controller.stop()
    return peak, statuses.count(302), len(sink.received)


def send_rate(connections, workdir):
    """Messages per second from the outbox to a sink answering at once, in this process."""
    from app import create_app, db
    from app.mail import Envelope, deliver_pending, email_kind, queue_email
    from config import Config

    @email_kind('bench', subject='[Microblog] Benchmark', template='test')
    def build_bench_email(data):
        return Envelope(to=data['to'], context={'server': 'the benchmark sink'})

    sink, controller = start_sink(0)
    tag = random.randrange(10**9)
    sink.accounts = {f'r{number}-{tag}@example.com' for number in range(RATE_MESSAGES)}
    settings = type(
        'Bench',
        (Config,),
        {
            'TESTING': True,  # no log files, no startup checks
            'SECRET_KEY': 'benchmark-secret-key-that-is-long-enough-0123456789',
            'SERVER_NAME': '127.0.0.1:5000',
            'SQLALCHEMY_DATABASE_URI': f'sqlite:///{workdir}/rate-{connections}.db',
            'MAIL_SUPPRESS_SEND': False,
            'MAIL_SERVER': '127.0.0.1',
            'MAIL_PORT': sink.port,
            'MAIL_DEFAULT_SENDER': 'no-reply@example.com',
            'MAIL_QUEUE': 'none',
            'MAIL_CONNECTIONS': connections,
        },
    )
    app = create_app(settings)
    try:
        with app.app_context():
            db.create_all()
            for number in range(RATE_MESSAGES):
                queue_email('bench', {'to': f'r{number}-{tag}@example.com'})
            db.session.commit()
            start = time.perf_counter()
            sent = 0
            for _ in range(20):
                sent += len(deliver_pending().sent)
                if sent >= RATE_MESSAGES:
                    break
            seconds = time.perf_counter() - start
            db.session.remove()
    finally:
        controller.stop()
    assert sent == RATE_MESSAGES == len(sink.received), (sent, len(sink.received))
    return RATE_MESSAGES / seconds


def report_delivery(label, result):
    arrivals = result['arrivals']
    last = f'{arrivals[-1]:.1f} s' if len(arrivals) >= MESSAGES else 'not reached'
    print(
        f'  {label:<34}: 100th message at {last}  ({len(arrivals)} received, '
        f'{result["accounts reached"]} accounts reached, requests took '
        f'{result["requests"]:.1f} s, {result["peak connections"]} messages at once at most)'
    )
    steps = '  '.join(
        f'{number}th {arrivals[number - 1]:.1f}'
        for number in (1, 10, 20, 40, 60, 80, 90, 100)
        if number <= len(arrivals)
    )
    print(f'  {"":<34}  arrivals (s): {steps}')
    spans = '  '.join(
        f'{times[0]:.1f}-{times[-1]:.1f}:{len(times)}' for times in result['connections']
    )
    print(f'  {"":<34}  SMTP connections (first-last message s: messages): {spans}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--only', default=','.join(PARTS), help='parts to run, of ' + str(PARTS))
    parts = [part for part in parser.parse_args().only.split(',') if part in PARTS]
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as workdir:
        if 'delivery' in parts:
            print(
                f'{MESSAGES} reset requests for {MESSAGES} accounts, gunicorn -w 2 (sync), '
                'SMTP server taking 1 s per message; time from the first request:',
                flush=True,
            )
            report_delivery('defaults (5 connections)', delivery(workdir, 'delivery-defaults'))
            report_delivery(
                'MAIL_CONNECTIONS=1', delivery(workdir, 'delivery-one', MAIL_CONNECTIONS=1)
            )
            report_delivery(
                'MAIL_BATCH_SIZE=1', delivery(workdir, 'delivery-batch1', MAIL_BATCH_SIZE=1)
            )
            report_delivery(
                'MAIL_BATCH_SIZE=1, 8 connections',
                delivery(workdir, 'delivery-8x1', MAIL_BATCH_SIZE=1, MAIL_CONNECTIONS=8),
            )
        if 'latency' in parts:
            fast = reset_latency(0, workdir)
            slow = reset_latency(1.0, workdir)
            print(
                f'POST /reset_password_request, gunicorn -w 1 --threads 4, {REQUESTS} sequential '
                f'requests {PACE * 1000:.0f} ms apart, 20 accounts, delivery in the same process:'
            )
            print(f'  SMTP answers at once : p50 {fast[0]:6.1f} ms   p99 {fast[1]:6.1f} ms')
            print(f'  SMTP takes 1 s/msg   : p50 {slow[0]:6.1f} ms   p99 {slow[1]:6.1f} ms')
            ratios = slow[0] / fast[0], slow[1] / fast[1]
            print(f'  ratio slow/fast      : p50 {ratios[0]:.2f}   p99 {ratios[1]:.2f}')
            print(f'  emails sent during the requests: {fast[2]} (fast), {slow[2]} (slow)')
        if 'burst' in parts:
            peak, ok, sent = burst_threads(workdir)
            print(
                f'Burst of {BURST} concurrent reset requests for {BURST} accounts ({ok} answered '
                f'302), gunicorn -w 1 --threads 4, SMTP 1 s/msg, until the pass had sent {sent}:'
            )
            print(f'  peak threads in the app worker process: {peak}')
        if 'rate' in parts:
            five = send_rate(5, workdir)
            one = send_rate(1, workdir)
            print(f'Delivery of {RATE_MESSAGES} messages to a local sink answering at once:')
            print(f'  5 connections (default) : {five:7.1f} messages/s')
            print(f'  1 connection            : {one:7.1f} messages/s')
    print(f'total {time.monotonic() - started:.0f} s')
    print(f'command: {command_line()}')


if __name__ == '__main__':
    main()
