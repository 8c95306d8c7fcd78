"""`flask mail`: test the server, see and push the outbox, run a worker, run a local sink."""

import errno
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time

import click
import sqlalchemy as sa
from flask import current_app, render_template, url_for
from flask.cli import AppGroup
from flask_babel import force_locale
from flask_mail import Message

from app import db
from app.addresses import UndeliverableAddressError, smtp_address, smtp_sender
from app.mail.outbox import deliver_pending, next_retry_at
from app.mail.sink import MailSink, sink_folder
from app.mail.smtp import SMTPConnection
from app.models import OutboundEmail, utcnow

mail_cli = AppGroup('mail', help='Email: test the server, watch and push the outbox, deliver.')


def server_description(config):
    """``host:port (mode)`` of the configured SMTP server, as an admin would check it."""
    if not config['MAIL_SERVER']:
        return 'not set (MAIL_SERVER): messages wait in the outbox until it is'
    mode = 'SSL' if config['MAIL_USE_SSL'] else 'STARTTLS' if config['MAIL_USE_TLS'] else 'plain'
    login = f', as {config["MAIL_USERNAME"]}' if config['MAIL_USERNAME'] else ''
    return f'{config["MAIL_SERVER"]}:{config["MAIL_PORT"]} ({mode}{login})'


@mail_cli.command('test')
@click.argument('address')
def mail_test(address):
    """Send a test message now and print the whole SMTP conversation."""
    config = current_app.config
    if not config['MAIL_SERVER']:
        raise click.ClickException(
            'MAIL_SERVER is not set, so there is nowhere to send to.\n'
            'Hint: set MAIL_SERVER and MAIL_PORT (see "Sending real email" in README.md), or '
            'run `flask mail sink` and set MAIL_SERVER=127.0.0.1 MAIL_PORT=8025.'
        )
    server = f'{config["MAIL_SERVER"]}:{config["MAIL_PORT"]}'
    click.echo(f'Connecting to {server_description(config)}, timeout {config["MAIL_TIMEOUT"]} s...')
    try:
        recipient = smtp_address(address)
    except UndeliverableAddressError as exc:
        raise click.ClickException(f'Cannot send to {address!r}: {exc}') from None
    context = {'server': server}
    # For the admin at the terminal, in English like the command's output.
    with force_locale('en'):
        message = Message(
            '[Microblog] Test message',
            sender=smtp_sender(config['MAIL_DEFAULT_SENDER']),
            recipients=[recipient],
            body=render_template('email/test.txt', **context),
            html=render_template('email/test.html', **context),
        )
    state = current_app.extensions['mail']
    state.debug = 1  # smtplib prints every line the server sends to stderr
    try:
        with SMTPConnection(state) as connection:
            connection.send(message)
    except smtplib.SMTPResponseException as exc:
        error = f'The server refused: {exc.smtp_code} {exc.smtp_error!r}'
        raise click.ClickException(with_hint(error, exc, config)) from exc
    except smtplib.SMTPRecipientsRefused as exc:
        error = f'The server refused the recipient: {exc.recipients}'
        raise click.ClickException(with_hint(error, exc, config)) from exc
    except (smtplib.SMTPException, OSError) as exc:
        error = f'Could not send through {server}: {type(exc).__name__}: {exc}'
        raise click.ClickException(with_hint(error, exc, config)) from exc
    finally:
        state.debug = 0
    if state.suppress:
        click.echo('MAIL_SUPPRESS_SEND is on: the message was built but not sent.')
    else:
        click.echo(f'Sent: {server} accepted the message for {recipient}.')


def with_hint(error, exc, config):
    """The error, and on a line of its own what to change, when the error says it."""
    hint = mail_hint(exc, config)
    return f'{error}\nHint: {hint}' if hint else error


def mail_hint(exc, config):
    """One line saying which setting to change after ``exc``, or None when nothing tells."""
    server = f'{config["MAIL_SERVER"]}:{config["MAIL_PORT"]}'
    ssl_on, tls_on = config['MAIL_USE_SSL'], config['MAIL_USE_TLS']
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f'the certificate of {server} does not verify ({exc.verify_message}): set '
            'MAIL_SERVER to the host name the certificate is for (not an IP address or an '
            "alias), or have the server's certificate fixed."
        )
    if isinstance(exc, ssl.SSLError) and ssl_on:
        return (
            f'{server} does not speak TLS from the first byte: for port 587 (STARTTLS) '
            'set MAIL_USE_TLS=true and MAIL_USE_SSL=false.'
        )
    if isinstance(exc, smtplib.SMTPServerDisconnected) and 'timed out' in str(exc) and not ssl_on:
        return (
            f'{server} took the connection but said nothing in {config["MAIL_TIMEOUT"]} s: it '
            'probably expects TLS from the first byte (port 465), so set MAIL_USE_SSL=true '
            'and MAIL_USE_TLS=false.'
        )
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return (
            f'the server refused the login of MAIL_USERNAME={config["MAIL_USERNAME"]}: check '
            'MAIL_USERNAME and MAIL_PASSWORD (Gmail needs an app password, not yours).'
        )
    if isinstance(exc, smtplib.SMTPNotSupportedError) and 'AUTH' in str(exc):
        if not (ssl_on or tls_on):
            return (
                'the server offers no login on a plain connection: set MAIL_USE_TLS=true '
                '(port 587) or MAIL_USE_SSL=true (port 465), or unset MAIL_USERNAME and '
                'MAIL_PASSWORD if it needs none.'
            )
        return 'the server takes no login: unset MAIL_USERNAME and MAIL_PASSWORD.'
    if isinstance(exc, smtplib.SMTPNotSupportedError) and 'STARTTLS' in str(exc):
        return (
            f'{server} offers no STARTTLS: use the port that does (587), or port 465 with '
            'MAIL_USE_SSL=true and MAIL_USE_TLS=false.'
        )
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return (
            f'the server will not send from {config["MAIL_DEFAULT_SENDER"]}: set '
            'MAIL_DEFAULT_SENDER to an address your account may send from.'
        )
    if isinstance(exc, socket.gaierror):
        return f'MAIL_SERVER={config["MAIL_SERVER"]} is not a host name that resolves: check it.'
    if isinstance(exc, ConnectionRefusedError):
        return (
            f'nothing accepts connections at {server}: check MAIL_SERVER and MAIL_PORT '
            '(587 with MAIL_USE_TLS, 465 with MAIL_USE_SSL).'
        )
    if isinstance(exc, TimeoutError):
        return (
            f'{server} did not answer in {config["MAIL_TIMEOUT"]} s: check MAIL_SERVER and '
            'MAIL_PORT, and that a firewall lets the connection out.'
        )
    return None


def _ago(delta):
    """A length of time in words an admin reads at a glance: "45 s", "12 min", "3 h"."""
    seconds = max(int(delta.total_seconds()), 0)
    if seconds < 120:
        return f'{seconds} s'
    if seconds < 7200:
        return f'{seconds // 60} min'
    if seconds < 172800:
        return f'{seconds // 3600} h'
    return f'{seconds // 86400} days'


def require_outbox():
    """Stop with one line when the database has no outbox yet (a fresh checkout)."""
    if not sa.inspect(db.engine).has_table(OutboundEmail.__tablename__):
        raise click.ClickException('The database has no outbox yet: run `flask db upgrade` first.')


@mail_cli.command('status')
def mail_status():
    """Show the server and backend, the outbox by state, what waits longest, the last errors."""
    require_outbox()
    config = current_app.config
    now = utcnow()
    click.echo(f'server   {server_description(config)}')
    click.echo(f'backend  {_backend_description(config)}')
    counts = dict(
        db.session.execute(
            sa.select(OutboundEmail.status, sa.func.count()).group_by(OutboundEmail.status)
        ).all()
    )
    for status in OutboundEmail.STATUSES:
        click.echo(f'{status:8} {counts.get(status, 0)}')
    waiting = OutboundEmail.status.in_([OutboundEmail.PENDING, OutboundEmail.SENDING])
    oldest = db.session.scalar(
        sa.select(OutboundEmail).where(waiting).order_by(OutboundEmail.created_at).limit(1)
    )
    if oldest is not None:
        click.echo(
            f'oldest waiting: #{oldest.id} {oldest.kind} to {oldest.recipient or "?"}, '
            f'queued {_ago(now - oldest.created_at)} ago, {oldest.attempts} attempt(s)'
        )
    retry = next_retry_at()
    if retry is not None:
        click.echo(
            f'next retry: {retry:%Y-%m-%d %H:%M:%S} UTC '
            f'({"due now" if retry <= now else "in " + _ago(retry - now)}); '
            '`flask mail send-pending --now` sends everything waiting at once'
        )
    errors = db.session.scalars(
        sa.select(OutboundEmail)
        .where(OutboundEmail.last_error.is_not(None))
        .order_by(OutboundEmail.id.desc())
        .limit(5)
    ).all()
    if errors:
        click.echo('last errors:')
        for row in errors:
            click.echo(
                f'  #{row.id} {row.kind} [{row.status}] to {row.recipient}: {row.last_error}'
            )


def _backend_description(config):
    backend = config['MAIL_QUEUE']
    if backend == 'thread':
        return (
            f'thread (a worker in each web process, every {config["MAIL_POLL_INTERVAL"]} s '
            f'and when woken, {config["MAIL_CONNECTIONS"]} connection(s))'
        )
    if backend == 'none':
        return 'none (stored only: cron runs `flask mail send-pending`)'
    from redis.exceptions import RedisError

    queue = current_app.extensions['mail_delivery'].queue
    try:
        queue.connection.ping()
        scheduled = queue.scheduled_job_registry.count
        answer = f'Redis answers, {queue.count} pass(es) queued, {scheduled} scheduled'
    except RedisError as exc:
        answer = f'Redis does not answer: {exc}'
    return f'rq (queue {queue.name} at {_without_password(config["REDIS_URL"])}: {answer})'


def _without_password(url):
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f':{parts.password}@', ':***@', 1)


@mail_cli.command('retry')
@click.option('--id', 'ids', type=int, multiple=True, help='Only these messages (repeatable).')
def mail_retry(ids):
    """Put failed messages back in the queue, with a fresh count of attempts."""
    require_outbox()
    query = (
        sa.update(OutboundEmail)
        .where(OutboundEmail.status == OutboundEmail.FAILED)
        .values(status=OutboundEmail.PENDING, attempts=0, next_attempt_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if ids:
        query = query.where(OutboundEmail.id.in_(ids))
    count = db.session.execute(query).rowcount
    db.session.commit()
    click.echo(f'{count} failed message(s) queued again.')
    if count:
        current_app.extensions['mail_delivery'].notify(wake=True)


@mail_cli.command('send-pending')
@click.option(
    '--now',
    'right_now',
    is_flag=True,
    help='Also send the messages waiting out a retry delay (after the server is fixed).',
)
def mail_send_pending(right_now):
    """Run one delivery pass here and now (for cron, or after a fix) and say what it did."""
    require_outbox()
    now = utcnow()
    if right_now:
        count = db.session.execute(
            sa.update(OutboundEmail)
            .where(
                OutboundEmail.status == OutboundEmail.PENDING, OutboundEmail.next_attempt_at > now
            )
            .values(next_attempt_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
        db.session.commit()
        click.echo(f'{count} message(s) waiting for a retry made due now.')
    report = deliver_pending(utcnow())
    click.echo(
        f'sent {len(report.sent)}, to retry {len(report.retrying)}, '
        f'failed {len(report.failed)}, dropped {len(report.dropped)}'
    )


@mail_cli.command('worker')
@click.option('--burst', is_flag=True, help='Stop when the queue is empty.')
def mail_worker(burst):
    """Run an RQ worker for the mail queue, inside the app context (MAIL_QUEUE=rq)."""
    from redis import Redis
    from rq import Queue, SimpleWorker

    from app.mail.workers import run_delivery_job

    config = current_app.config
    connection = Redis.from_url(config['REDIS_URL'])
    queue = Queue(config['MAIL_RQ_QUEUE'], connection=connection)
    # A pass on start picks up whatever is pending from before.
    queue.enqueue(run_delivery_job, result_ttl=0)
    worker = SimpleWorker([queue], connection=connection)
    worker.work(burst=burst, with_scheduler=True)


@mail_cli.command('sink', context_settings={'ignore_unknown_options': True})
@click.option('--host', default='127.0.0.1', show_default=True)
@click.option('--port', default=8025, show_default=True, type=int)
@click.argument('command', nargs=-1, type=click.UNPROCESSED)
def mail_sink(host, port, command):
    """A local SMTP server that keeps every message, for /_mail (debug) and any mail reader.

    With a COMMAND (after --), run it while the sink serves and stop with it:
    `make run` runs `flask mail sink -- flask run`, so the inbox outlives restarts
    of the app and ends with the sink.
    """
    app = current_app._get_current_object()
    folder = sink_folder(app, port)
    sink = MailSink(host, port, folder, announce=lambda key, message: announce(app, key, message))
    try:
        sink.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise click.ClickException(
                f'{host}:{port} is taken (another mail sink?): stop what uses it, or choose '
                f'another port, as in `flask mail sink --port {port + 1}` or '
                f'`make run MAIL_PORT={port + 1}`.'
            ) from None
        raise click.ClickException(f'The mail sink cannot listen on {host}:{port}: {exc}') from None
    # SIGTERM ends the sink as Ctrl-C does: the folder is removed either way.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if command:
            click.echo(banner(app, host, port))
            code = run_while_serving(command)
        else:
            click.echo(
                f'Mail sink on {host}:{port}: it keeps every message in {folder} '
                f'(read them at {inbox_url(app) or "/_mail, in debug mode"}) until it stops.'
            )
            code = wait_for_interrupt()
    finally:
        signal.signal(signal.SIGTERM, previous)
        sink.stop()
    sys.exit(code)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def wait_for_interrupt():
    """Block until Ctrl-C or SIGTERM; the exit status."""
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    return 0


CHILD_STOP_TIMEOUT = 15  # seconds the app gets to stop before it is killed


def run_while_serving(command):
    """Run ``command`` in a process group of its own; pass on Ctrl-C or SIGTERM; its status.

    It returns once every process of that group has ended: the reloader exits at once
    on SIGTERM, while the server it runs may still be finishing a request and holding
    the port.
    """
    child = subprocess.Popen(command, process_group=0)
    try:
        return child.wait()
    except KeyboardInterrupt:
        # The app's group did not get the terminal's signal: hand it on (to the
        # reloader and the server it runs), and wait for them to finish.
        os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(CHILD_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        return 0
    finally:
        wait_for_group(child.pid)


def wait_for_group(group, timeout=CHILD_STOP_TIMEOUT):
    """Wait until no process is left in ``group``; kill what is still there after ``timeout``."""
    deadline = time.monotonic() + timeout
    for signum in (0, signal.SIGKILL):
        while time.monotonic() < deadline:
            try:
                os.killpg(group, signum)
            except ProcessLookupError:  # the group is empty: every member has ended
                return
            time.sleep(0.05)
        deadline = time.monotonic() + 5  # for the killed ones to be reaped


def inbox_url(app, key=None):
    """The address of the debug inbox (or of one message), or None outside debug mode."""
    if 'devmail' not in app.blueprints:
        return None
    with app.app_context():
        if key is None:
            return url_for('devmail.inbox', _external=True)
        return url_for('devmail.message', key=key, _external=True)


def banner(app, host, port):
    """What `make run` shows once the sink listens: where the site and its emails are."""
    site = f'{app.config["PREFERRED_URL_SCHEME"]}://{app.config["SERVER_NAME"]}/'
    lines = [f'  Microblog        {site}']
    inbox = inbox_url(app)
    if inbox:
        lines.append(f'  Its emails       {inbox}')
    lines.append(f'  Mail sink        {host}:{port} (keeps every message until it stops)')
    lines.append('  Stop both with Ctrl-C.')
    rule = '-' * max(len(line) for line in lines)
    return '\n'.join([rule, *lines, rule])


def announce(app, key, message):
    """One line in the terminal for each message the sink keeps."""
    where = inbox_url(app, key) or key
    recipients = ', '.join(message.get_all('Delivered-To') or []) or message['To']
    click.echo(f'Mail to {recipients}: {message["Subject"]!r}  {where}')
