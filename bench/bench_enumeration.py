"""Can response time tell who has an account? Reset requests and logins, known against unknown.

Not a test: it prints figures. For each serving mode (gunicorn ``-w 2`` sync workers, and
``-w 2 --threads 4``) it migrates and seeds a fresh SQLite file (`flask seed --users 100 --posts
0 --follows 0`, with a random ``--seed`` so that the addresses are this run's alone), starts
gunicorn on 127.0.0.1 with the default settings but RATELIMIT_ENABLED=false (CSRF stays on: each
POST carries the token of the form page fetched, untimed, just before it), with the in-process
delivery thread (MAIL_QUEUE=thread, every MAIL_POLL_INTERVAL = 3 s, 5 connections) sending to a
local aiosmtpd sink that answers at once, so that the emails of known addresses are really
looked up, rendered and sent inside the web processes while requests are being timed.

POST /reset_password_request is timed for one account's address ("known") and for fresh
addresses without an account ("unknown"), sequentially, in three orders: blocks (all known,
then all unknown), its control "reversed" (all unknown, then all known) and interleaved
(known, unknown, known, ...); each order is run ``--rounds`` times, and the outbox is left to
drain between orders, so that each starts with idle workers. For each it prints the medians,
the 90th percentiles and the Mann-Whitney AUC: the probability that a known request is
slower than an unknown one (0.5: time tells nothing). Then it waits one whole cadence and
checks that every email of a known address reached the sink, times POST /login with a
wrong password against an unknown username (interleaved), and POST /register with the known
address against fresh ones (blocks, reversed, interleaved; a new username each time).

    .venv/bin/python bench/bench_enumeration.py [--requests 100] [--rounds 3] [--logins 50]
        [--registrations 50]
"""

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiosmtpd.controller import Controller  # noqa: E402

from bench.serve import (  # noqa: E402
    Browser,
    Server,
    app_env,
    auc,
    command_line,
    flask,
    free_port,
    quantile,
    seed_accounts,
)

POLL_INTERVAL = 5  # the default MAIL_POLL_INTERVAL, which this benchmark keeps
DRAIN_LIMIT = 60  # seconds to wait for the outbox to empty before giving up
MODES = {'sync': 1, 'threads': 4}  # gunicorn --threads for each mode; -w 2 in both


class Sink:
    """An SMTP server that accepts every message at once and remembers when and for whom."""

    def __init__(self):
        self.received = []  # (time.time(), recipients)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.received.append((time.time(), tuple(envelope.rcpt_tos)))
        await asyncio.sleep(0)
        return '250 OK'

    def count(self, address=None):
        return sum(1 for _, rcpts in self.received if address is None or address in rcpts)


def outbox(database):
    """The outbox rows by status."""
    with sqlite3.connect(f'file:{database}?mode=ro', uri=True, timeout=15) as connection:
        rows = connection.execute('SELECT status, count(*) FROM outbound_email GROUP BY status')
        return dict(rows.fetchall())


def drain(database, sink, known, expected, at_least=0.0):
    """Wait (``at_least`` seconds, then) until nothing is pending and ``expected`` emails to
    the known address are at the sink."""
    start = time.monotonic()
    time.sleep(at_least)
    while time.monotonic() - start < DRAIN_LIMIT:
        counts = outbox(database)
        if (
            not counts.get('pending')
            and not counts.get('sending')
            and sink.count(known) >= expected
        ):
            return time.monotonic() - start
        time.sleep(0.2)
    raise RuntimeError(f'the outbox did not drain in {DRAIN_LIMIT} s: {outbox(database)}')


def start_app(workdir, name, threads, smtp_port):
    """Migrate and seed a database, then serve it; the server, its file and one account."""
    port = free_port()
    database = f'{workdir}/{name}.db'
    env = app_env(
        port,
        f'sqlite:///{database}',
        WTF_CSRF_ENABLED='true',
        MAIL_SERVER='127.0.0.1',
        MAIL_PORT=smtp_port,
    )
    for name in ('MAIL_QUEUE', 'MAIL_POLL_INTERVAL', 'MAIL_CONNECTIONS', 'MAIL_BATCH_SIZE'):
        env.pop(name, None)  # the defaults: thread, 3 s, 5 connections, claims of up to 10
    flask(env, 'db', 'upgrade')
    seed_accounts(env, 100)
    with sqlite3.connect(database) as connection:
        account = connection.execute('SELECT username, email FROM user LIMIT 1').fetchone()
    return Server(env, port, workers=2, threads=threads), database, account


def reset_requests(server, sequence):
    """Time POST /reset_password_request for each (label, address); samples and time spans."""
    browser = Browser()
    url = server.base + '/reset_password_request'
    samples = {'known': [], 'unknown': []}
    spans = {'known': [], 'unknown': []}
    for label, address in sequence:
        started = time.time()
        status, seconds = browser.submit(url, {'email': address})
        assert status == 302, f'{label} reset request answered {status}'
        samples[label].append(seconds)
        spans[label].append((started, time.time()))
    return samples, spans


def orders(known, count, tag):
    """The two orders of ``count`` known and ``count`` unknown requests."""

    def unknown(number):
        return 'unknown', f'nobody-{tag}-{number}@example.com'

    blocks = [('known', known)] * count + [unknown(n) for n in range(count)]
    # The control: whatever makes the first (or second) block slower, whoever it asks
    # about (a pass of the delivery thread, the machine's other load), shows here too.
    reversed_ = [unknown(count + n) for n in range(count)] + [('known', known)] * count
    interleaved = []
    for number in range(count):
        interleaved += [('known', known), unknown(2 * count + number)]
    return {'blocks': blocks, 'reversed': reversed_, 'interleaved': interleaved}


def sent_during(sink, known, spans):
    """Emails to the known address the sink received while requests of a label were made."""
    first = min(start for start, _ in spans)
    last = max(end for _, end in spans)
    return sum(1 for when, rcpts in sink.received if first <= when <= last and known in rcpts)


def login_requests(server, username, count):
    """Interleaved POST /login: a wrong password for an account, and an unknown username."""
    browser = Browser()
    url = server.base + '/login'
    samples = {'wrong password': [], 'unknown user': []}
    for number in range(count):
        pairs = [('wrong password', username), ('unknown user', f'nobody{number}')]
        for label, name in pairs if number % 2 else pairs[::-1]:
            status, seconds = browser.submit(url, {'username': name, 'password': 'wrong-pw-123'})
            assert status == 200, f'login ({label}) answered {status}'
            samples[label].append(seconds)
    return samples


def registration_requests(server, known, count, tag):
    """POST /register with the known address or a fresh one, each with a new username.

    Blocks (all known, then all unknown), reversed (its control) and interleaved; a known
    address makes no account and emails its owner, an unknown one makes an account and sends
    it a confirmation link.
    """
    browser = Browser()
    url = server.base + '/register'
    password = 'quiet-Meadow-lantern-42'
    results = {}
    for order in ('blocks', 'reversed', 'interleaved'):
        if order == 'blocks':
            sequence = ['known'] * count + ['unknown'] * count
        elif order == 'reversed':  # the control of blocks
            sequence = ['unknown'] * count + ['known'] * count
        else:
            sequence = ['known', 'unknown'] * count
        samples = {'known': [], 'unknown': []}
        for number, label in enumerate(sequence):
            name = f'r{tag}{order[0]}{number}'
            address = known if label == 'known' else f'{name}@example.com'
            data = {'username': name, 'email': address, 'password': password}
            status, seconds = browser.submit(url, data | {'password2': password})
            assert status == 302, f'{label} registration answered {status}'
            samples[label].append(seconds)
        results[order] = samples
    return results


def run_mode(workdir, mode, count, rounds, logins, registrations):
    """Every measurement for one serving mode; a list of result rows and the checks."""
    sink = Sink()
    smtp_port = free_port()
    controller = Controller(sink, hostname='127.0.0.1', port=smtp_port)
    controller.start()
    rows, checks = [], {}
    try:
        server, database, (username, known) = start_app(workdir, mode, MODES[mode], smtp_port)
        try:
            # Warm both workers up (templates, connections), then let the outbox drain.
            warm = [('known', known), ('unknown', 'warm-up@example.com')] * 10
            reset_requests(server, warm)
            expected = 10
            drain(database, sink, known, expected)
            for round_ in range(rounds):
                for order, sequence in orders(known, count, f'{mode}{round_}').items():
                    samples, spans = reset_requests(server, sequence)
                    busy = {label: sent_during(sink, known, spans[label]) for label in spans}
                    rows.append((mode, order, round_, samples, busy))
                    expected += count
                    drain(database, sink, known, expected, at_least=0.5)
            # The emails really left: wait at least one whole cadence, then count them.
            time.sleep(POLL_INTERVAL + 1)
            drain(database, sink, known, expected)
            checks = {
                'expected': expected,
                'received': sink.count(),
                'to the known address': sink.count(known),
                'outbox': outbox(database),
            }
            if logins:
                rows.append((mode, 'login', 0, login_requests(server, username, logins), None))
            if registrations:
                found = registration_requests(server, known, registrations, mode)
                for order, samples in found.items():
                    rows.append((mode, f'register/{order[:3]}', 0, samples, None))
        finally:
            server.stop()
    finally:
        controller.stop()
    return rows, checks


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--requests', type=int, default=100, help='known (and unknown) per order')
    parser.add_argument('--rounds', type=int, default=3, help='times each order is run')
    parser.add_argument('--logins', type=int, default=50, help='logins of each kind (0: none)')
    parser.add_argument(
        '--registrations', type=int, default=50, help='registrations of each kind (0: none)'
    )
    parser.add_argument('--modes', default='sync,threads', help='sync, threads or both')
    args = parser.parse_args()
    count = min(max(args.requests, 2), 1000)
    rounds = min(max(args.rounds, 1), 10)
    logins = min(max(args.logins, 0), 500)
    registrations = min(max(args.registrations, 0), 500)
    modes = [mode for mode in args.modes.split(',') if mode in MODES]

    started = time.monotonic()
    load_before = f'{os.getloadavg()[0]:.2f}'
    results, all_checks = [], {}
    with tempfile.TemporaryDirectory() as workdir:
        for mode in modes:
            rows, checks = run_mode(workdir, mode, count, rounds, logins, registrations)
            results += rows
            all_checks[mode] = checks

    print(
        '\nSQLite; default settings but RATELIMIT_ENABLED=false; CSRF on (token from the form); '
        'delivery thread every 3 s, 5 connections, claims of up to 10, to a local aiosmtpd sink '
        'answering at once; sequential requests, each POST preceded by an untimed GET of its '
        f'form. Load average before: {load_before}, after: {os.getloadavg()[0]:.2f}'
    )
    for mode in modes:
        title = 'gunicorn -w 2 --threads 4' if mode == 'threads' else 'gunicorn -w 2 (sync)'
        print(f'\n{title}')
        print(
            f'  {"order":<13}{"round":<7}{"request":<16}{"n":>4}{"median ms":>11}{"p90 ms":>9}'
            f'{"sent meanwhile":>16}{"AUC":>8}'
        )
        rows = [row for row in results if row[0] == mode]
        for _, order, round_, samples, busy in rows:
            if order != 'login' and not order.startswith('register'):
                print_rows(order, str(round_ + 1), samples, busy)
        if rounds > 1:
            for order in ('blocks', 'reversed', 'interleaved'):
                pooled = {'known': [], 'unknown': []}
                for _, row_order, _, samples, _ in rows:
                    if row_order == order:
                        for label in pooled:
                            pooled[label] += samples[label]
                print_rows(order, 'all', pooled, None)
        for _, order, _, samples, _ in rows:
            if order == 'login' or order.startswith('register'):
                print_rows(order, '', samples, None)
        checks = all_checks[mode]
        print(
            f'  delivery check ({POLL_INTERVAL + 1} s after the last request, then until the '
            f'outbox was empty): {checks["received"]} emails at the sink for '
            f'{checks["expected"]} known-address requests (warm-up included), '
            f'{checks["to the known address"]} of them to the known address; '
            f'outbox: {checks["outbox"]}'
        )
    print(
        '\nAUC: probability that a known-address request (a wrong password) is slower than an '
        'unknown one (for register: an address with an account); 0.5: time tells nothing. '
        '"sent meanwhile": emails the sink received while the requests of that label were '
        'being made. "reversed" is the control of "blocks": unknown first, then known.'
    )
    print(
        f'By chance alone (independent samples), the AUC of {count} against {count} falls '
        f'within 0.5 ± {1.96 * ((2 * count + 1) / (12 * count * count)) ** 0.5:.3f} '
        '95 times in 100.'
    )
    print(f'total {time.monotonic() - started:.0f} s')
    print(f'command: {command_line()}')


def print_rows(order, round_, samples, busy):
    labels = list(samples)
    for index, label in enumerate(labels):
        values = samples[label]
        line = f'  {order:<13}{round_:<7}{label:<16}{len(values):>4}'
        line += f'{statistics.median(values) * 1000:>11.2f}{quantile(values, 0.9):>9.2f}'
        line += f'{busy[label] if busy else "":>16}'
        if index == 0:
            line += f'{auc(samples[labels[0]], samples[labels[1]]):>8.3f}'
        print(line)


if __name__ == '__main__':
    main()
