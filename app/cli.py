"""Flask commands: the mail sink, the outbox, and seed data."""

import email
import email.policy
import smtplib
import sys
import threading

import click
import sqlalchemy as sa
from flask import current_app, render_template
from flask.cli import AppGroup

from app import db
from app.models import OutboundEmail, PasswordResetRequest, utcnow

mail_cli = AppGroup('mail', help='Email: test the server, watch the outbox, run delivery.')


def register_commands(app):
    app.cli.add_command(mail_cli)
    from app.seed import seed_command

    app.cli.add_command(seed_command)


@mail_cli.command('test')
@click.argument('address')
def mail_test(address):
    """Send a test message now and print the whole SMTP conversation."""
    from flask_mail import Message

    from app.email import SMTPConnection

    config = current_app.config
    server = f'{config["MAIL_SERVER"]}:{config["MAIL_PORT"]}'
    mode = 'SSL' if config['MAIL_USE_SSL'] else 'STARTTLS' if config['MAIL_USE_TLS'] else 'plain'
    click.echo(f'Connecting to {server} ({mode}, timeout {config["MAIL_TIMEOUT"]} s)...')
    context = {'server': server}
    message = Message(
        '[Microblog] Test message',
        sender=config['MAIL_DEFAULT_SENDER'],
        recipients=[address],
        body=render_template('email/test.txt', **context),
        html=render_template('email/test.html', **context),
    )
    state = current_app.extensions['mail']
    state.debug = 1  # smtplib prints every line the server sends to stderr
    try:
        with SMTPConnection(state) as connection:
            connection.send(message)
    except smtplib.SMTPResponseException as exc:
        raise click.ClickException(
            f'The server refused: {exc.smtp_code} {exc.smtp_error!r}'
        ) from exc
    except smtplib.SMTPRecipientsRefused as exc:
        raise click.ClickException(f'The server refused the recipient: {exc.recipients}') from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise click.ClickException(
            f'Could not send through {server}: {type(exc).__name__}: {exc}'
        ) from exc
    finally:
        state.debug = 0
    if current_app.extensions['mail'].suppress:
        click.echo('MAIL_SUPPRESS_SEND is on: the message was built but not sent.')
    else:
        click.echo(f'Sent: {server} accepted the message for {address}.')


@mail_cli.command('status')
def mail_status():
    """Show the outbox: counts by state, the oldest pending message, the last errors."""
    counts = dict(
        db.session.execute(
            sa.select(OutboundEmail.status, sa.func.count()).group_by(OutboundEmail.status)
        ).all()
    )
    for status in (
        OutboundEmail.PENDING,
        OutboundEmail.SENDING,
        OutboundEmail.SENT,
        OutboundEmail.FAILED,
    ):
        click.echo(f'{status:8} {counts.get(status, 0)}')
    waiting = db.session.scalar(sa.select(sa.func.count()).select_from(PasswordResetRequest))
    if waiting:
        click.echo(f'{waiting} password reset request(s) waiting to be written')
    oldest = db.session.scalar(
        sa.select(OutboundEmail)
        .where(OutboundEmail.status.in_([OutboundEmail.PENDING, OutboundEmail.SENDING]))
        .order_by(OutboundEmail.created_at)
        .limit(1)
    )
    if oldest is not None:
        age = utcnow() - oldest.created_at
        click.echo(
            f'oldest pending: #{oldest.id} to {", ".join(oldest.recipients)}, '
            f'queued {_ago(age)} ago, {oldest.attempts} attempt(s), '
            f'next attempt {oldest.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC'
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
                f'  #{row.id} [{row.status}] to {", ".join(row.recipients)}: {row.last_error}'
            )


def _ago(delta):
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f'{seconds} s'
    if seconds < 7200:
        return f'{seconds // 60} min'
    return f'{seconds // 3600} h'


@mail_cli.command('retry')
@click.option('--id', 'ids', type=int, multiple=True, help='Only these messages (repeatable).')
def mail_retry(ids):
    """Put failed messages back in the queue, with a fresh count of attempts."""
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
        current_app.extensions['mail_delivery'].notify()


@mail_cli.command('send-pending')
def mail_send_pending():
    """Run one delivery pass now (for cron or debugging) and say what it did."""
    from app.email import deliver_pending

    report = deliver_pending()
    click.echo(
        f'sent {len(report.sent)}, to retry {len(report.retrying)}, failed {len(report.failed)}'
    )


@mail_cli.command('worker')
@click.option('--burst', is_flag=True, help='Stop when the queue is empty.')
def mail_worker(burst):
    """Run an RQ worker for the mail queue, inside the app context (MAIL_QUEUE=rq)."""
    from redis import Redis
    from rq import Queue, SimpleWorker

    config = current_app.config
    connection = Redis.from_url(config['REDIS_URL'])
    queue = Queue(config['MAIL_RQ_QUEUE'], connection=connection)
    # A pass on start picks up whatever is pending from before.
    from app.email import run_delivery_job

    queue.enqueue(run_delivery_job, result_ttl=0)
    worker = SimpleWorker([queue], connection=connection)
    worker.work(burst=burst, with_scheduler=True)


@mail_cli.command('sink')
@click.option('--host', default='127.0.0.1', show_default=True)
@click.option('--port', default=8025, show_default=True, type=int)
def mail_sink(host, port):
    """A local debugging SMTP server that prints every message it receives."""
    run_debugging_server(host, port)


class PrintingHandler:
    """aiosmtpd handler that prints each message, both parts, to stdout."""

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        out = sys.stdout
        out.write('-' * 72 + '\n')
        out.write(f'From: {envelope.mail_from}\nTo: {", ".join(envelope.rcpt_tos)}\n')
        out.write(f'Subject: {message["subject"]}\n\n')
        for part in message.walk():
            if part.get_content_maintype() == 'multipart':
                continue
            out.write(f'[{part.get_content_type()}]\n{part.get_content()}\n')
        out.write('-' * 72 + '\n')
        out.flush()
        return '250 Message accepted for delivery'


def run_debugging_server(host, port):
    """Serve the printing SMTP sink until interrupted."""
    from aiosmtpd.controller import Controller

    controller = Controller(PrintingHandler(), hostname=host, port=port)
    controller.start()
    click.echo(f'Debugging SMTP server on {host}:{port}; every message is printed here.')
    stop = threading.Event()
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()
