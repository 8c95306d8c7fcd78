"""Outgoing email: a durable outbox, delivered in the background.

A message is stored as an ``OutboundEmail`` row before ``send_email`` returns. A
delivery pass claims the rows that are due (atomically, so two workers never send
the same row), sends them over one SMTP connection and records the outcome: sent,
retried later with exponential backoff, or failed. The pass runs on a background
thread in the web process (``MAIL_QUEUE=thread``), in RQ workers (``MAIL_QUEUE=rq``)
or from cron through ``flask mail send-pending`` (``MAIL_QUEUE=none``).
"""

import atexit
import os
import smtplib
import socket
import ssl
import threading
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import flask_mail
import sqlalchemy as sa
from flask import current_app, has_app_context
from flask_mail import Message

from app import db
from app.models import OutboundEmail, PasswordResetRequest, User, utcnow

RQ_QUEUE_NAME = 'microblog-mail'


class MailNotConfigured(smtplib.SMTPException):
    """MAIL_SERVER is not set, so there is nowhere to send to."""


class SMTPConnection(flask_mail.Connection):
    """Flask-Mail's connection with a timeout and a verified TLS certificate.

    Flask-Mail opens the socket with no timeout (a wrong port hangs for minutes)
    and starts TLS with no SSL context (so the certificate is not checked).
    """

    def configure_host(self):
        state = self.mail
        if not state.server:
            raise MailNotConfigured('MAIL_SERVER is not set')
        timeout = current_app.config['MAIL_TIMEOUT']
        context = ssl.create_default_context()
        if state.use_ssl:
            host = smtplib.SMTP_SSL(state.server, state.port, timeout=timeout, context=context)
        else:
            host = smtplib.SMTP(state.server, state.port, timeout=timeout)
        try:
            host.set_debuglevel(int(state.debug))
            if state.use_tls:
                host.starttls(context=context)
            if state.username and state.password:
                host.login(state.username, state.password)
        except BaseException:
            host.close()
            raise
        return host

    def __exit__(self, exc_type, exc_value, tb):
        if self.host is None:
            return
        try:
            self.host.quit()
        except (smtplib.SMTPException, OSError):
            # The messages are already accepted; a server that hangs up
            # before saying goodbye changes nothing.
            self.host.close()


def connect():
    """Open an SMTP connection configured from the app's MAIL_* settings."""
    return SMTPConnection(current_app.extensions['mail'])


def send_email(subject, sender, recipients, text_body, html_body):
    """Store a message in the outbox and hand it to the delivery backend; returns at once."""
    email = store_email(subject, sender, recipients, text_body, html_body)
    db.session.commit()
    delivery.notify()
    return email


def store_email(subject, sender, recipients, text_body, html_body):
    """Add a message to the outbox in the current transaction, without committing."""
    email = OutboundEmail(
        subject=subject,
        sender=sender or current_app.config['MAIL_DEFAULT_SENDER'],
        recipients=list(recipients),
        text_body=text_body,
        html_body=html_body,
        status=OutboundEmail.PENDING,
        attempts=0,
        next_attempt_at=utcnow(),
    )
    db.session.add(email)
    return email


def build_message(email):
    """The Flask-Mail message for an outbox row."""
    message = Message(email.subject, sender=email.sender, recipients=list(email.recipients))
    message.body = email.text_body
    message.html = email.html_body
    return message


@dataclass
class DeliveryReport:
    """What one delivery pass did."""

    sent: list = field(default_factory=list)
    retrying: list = field(default_factory=list)
    failed: list = field(default_factory=list)

    @property
    def attempted(self):
        return len(self.sent) + len(self.retrying) + len(self.failed)


def backoff_seconds(attempts):
    """Seconds to wait before the next attempt: doubling from MAIL_RETRY_BACKOFF, capped."""
    config = current_app.config
    delay = config['MAIL_RETRY_BACKOFF'] * 2 ** max(attempts - 1, 0)
    # At least a second, so that one pass never tries the same message twice.
    return max(1, min(delay, config['MAIL_RETRY_BACKOFF_MAX']))


def is_permanent(exc):
    """Whether an SMTP error means "never" (5xx) rather than "not now"."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return bool(codes) and all(500 <= code < 600 for code in codes)
    if isinstance(exc, smtplib.SMTPResponseException):
        return 500 <= exc.smtp_code < 600
    return isinstance(exc, (flask_mail.BadHeaderError, UnicodeError))


def describe(exc):
    """A one-line account of an error, as an admin would want to read it."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return '; '.join(
            f'{rcpt}: {code} {_text(msg)}' for rcpt, (code, msg) in exc.recipients.items()
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        return f'{exc.smtp_code} {_text(exc.smtp_error)}'
    return f'{type(exc).__name__}: {exc}'


def _text(value):
    return value.decode('utf-8', 'replace') if isinstance(value, bytes) else str(value)


def deliver_pending(now=None):
    """Run one delivery pass: expand reset requests, then send every message that is due."""
    expand_reset_requests()
    # Taken after the expansion, so that the emails it just wrote are due.
    now = now or utcnow()
    report = DeliveryReport()
    batch_size = current_app.config['MAIL_BATCH_SIZE']
    while True:
        worker = f'{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}'
        batch = claim_due(now, worker, batch_size)
        if not batch:
            break
        send_batch(batch, now, worker, report)
        if len(batch) < batch_size:
            break
    return report


def _due(now):
    return sa.or_(
        sa.and_(
            OutboundEmail.status == OutboundEmail.PENDING, OutboundEmail.next_attempt_at <= now
        ),
        sa.and_(OutboundEmail.status == OutboundEmail.SENDING, OutboundEmail.claimed_until < now),
    )


def claim_due(now, worker, limit):
    """Atomically mark up to ``limit`` due messages as being sent by ``worker`` and return them.

    The outer WHERE repeats the due condition so that on PostgreSQL a row another
    worker claimed first is re-checked and skipped; SQLite runs the statement
    under its single write lock.
    """
    candidates = (
        sa.select(OutboundEmail.id)
        .where(_due(now))
        .order_by(OutboundEmail.next_attempt_at, OutboundEmail.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    lease = timedelta(seconds=current_app.config['MAIL_CLAIM_TIMEOUT'])
    claim = (
        sa.update(OutboundEmail)
        .where(OutboundEmail.id.in_(candidates.scalar_subquery()), _due(now))
        .values(status=OutboundEmail.SENDING, claimed_by=worker, claimed_until=now + lease)
        .returning(OutboundEmail.id)
        .execution_options(synchronize_session=False)
    )
    ids = list(db.session.scalars(claim))
    db.session.commit()
    if not ids:
        return []
    query = (
        sa.select(OutboundEmail)
        .where(OutboundEmail.id.in_(ids))
        .order_by(OutboundEmail.id)
        .execution_options(populate_existing=True)
    )
    return list(db.session.scalars(query))


SERVER_ANSWERS = (
    smtplib.SMTPResponseException,
    smtplib.SMTPRecipientsRefused,
    flask_mail.BadHeaderError,
    UnicodeError,
)


def send_batch(batch, now, worker, report):
    """Send claimed messages over one SMTP connection, reconnecting if it drops."""
    remaining = list(batch)
    while remaining:
        try:
            with connect() as connection:
                while remaining:
                    email = remaining.pop(0)
                    try:
                        connection.send(build_message(email))
                    except SERVER_ANSWERS as exc:
                        # The server said no to this message; the connection is still good.
                        record_failure(email, exc, now, worker, report)
                    except OSError as exc:
                        # The connection is gone (smtplib's errors are OSErrors too):
                        # count this attempt and reconnect for the rest.
                        record_failure(email, exc, now, worker, report)
                        break
                    else:
                        record_sent(email, now, worker, report)
        except (smtplib.SMTPException, OSError) as exc:
            # Could not connect (or log in): nothing in the batch can go now.
            for email in remaining:
                record_failure(email, exc, now, worker, report)
            remaining = []


def _record(email, worker, **values):
    update = (
        sa.update(OutboundEmail)
        .where(OutboundEmail.id == email.id, OutboundEmail.claimed_by == worker)
        .values(claimed_until=None, claimed_by=None, **values)
        .execution_options(synchronize_session=False)
    )
    db.session.execute(update)
    db.session.commit()


def record_sent(email, now, worker, report):
    _record(
        email,
        worker,
        status=OutboundEmail.SENT,
        attempts=email.attempts + 1,
        sent_at=utcnow(),
        last_error=None,
    )
    report.sent.append(email.id)


def record_failure(email, exc, now, worker, report):
    """Schedule a retry with backoff, or give up on a permanent error or the last attempt."""
    config = current_app.config
    attempts = email.attempts + 1
    error = describe(exc)
    recipients = ', '.join(email.recipients)
    if is_permanent(exc) or attempts >= config['MAIL_MAX_ATTEMPTS']:
        _record(email, worker, status=OutboundEmail.FAILED, attempts=attempts, last_error=error)
        current_app.logger.error(
            'Email %s to %s failed after %d attempt(s), giving up: %s',
            email.id,
            recipients,
            attempts,
            error,
        )
        report.failed.append(email.id)
        return
    delay = backoff_seconds(attempts)
    _record(
        email,
        worker,
        status=OutboundEmail.PENDING,
        attempts=attempts,
        last_error=error,
        next_attempt_at=now + timedelta(seconds=delay),
    )
    current_app.logger.warning(
        'Email %s to %s not sent (attempt %d of %d), retrying in %d s: %s',
        email.id,
        recipients,
        attempts,
        config['MAIL_MAX_ATTEMPTS'],
        delay,
        error,
    )
    report.retrying.append(email.id)


def next_due_at():
    """When the earliest pending or stale-claimed message becomes due, or None."""
    pending = db.session.scalar(
        sa.select(sa.func.min(OutboundEmail.next_attempt_at)).where(
            OutboundEmail.status == OutboundEmail.PENDING
        )
    )
    claimed = db.session.scalar(
        sa.select(sa.func.min(OutboundEmail.claimed_until)).where(
            OutboundEmail.status == OutboundEmail.SENDING
        )
    )
    times = [t for t in (pending, claimed) if t is not None]
    return min(times) if times else None


def find_user_by_email(address):
    """The account whose email matches, ignoring case, or None."""
    return db.session.scalar(
        sa.select(User).where(sa.func.lower(User.email) == address.strip().lower())
    )


def expand_reset_requests(limit=100):
    """Turn stored reset requests into reset emails for the accounts that exist."""
    from app.auth.email import store_password_reset_email

    rows = db.session.scalars(
        sa.select(PasswordResetRequest).order_by(PasswordResetRequest.id).limit(limit)
    ).all()
    db.session.rollback()
    for row in rows:
        taken = db.session.execute(
            sa.delete(PasswordResetRequest)
            .where(PasswordResetRequest.id == row.id)
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount != 1:
            # Another worker expanded it first.
            db.session.rollback()
            continue
        user = find_user_by_email(row.email)
        if user is not None:
            store_password_reset_email(user)
        db.session.commit()
    return len(rows)


class ThreadBackend:
    """One delivery worker thread per process, woken when a message is stored or a retry is due."""

    def __init__(self, app):
        self.app = app
        self._cond = threading.Condition()
        self._thread = None
        self._pid = None
        self._stopping = False
        self._wake = False
        self._requested = 0
        self._completed = 0
        self._atexit_registered = False

    def _alive(self):
        return self._thread is not None and self._pid == os.getpid() and self._thread.is_alive()

    def start(self):
        """Start the worker thread in this process if it is not running."""
        if self._alive() and not self._stopping:
            return
        with self._cond:
            if self._alive() and not self._stopping:
                return
            self._stopping = False
            self._pid = os.getpid()
            self._thread = threading.Thread(
                target=self._run, name='microblog-mail-delivery', daemon=True
            )
            self._thread.start()
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True

    def notify(self):
        """Wake the worker: a message was stored."""
        self.start()
        with self._cond:
            self._wake = True
            self._cond.notify_all()

    def flush(self, timeout=30):
        """Block until the worker has completed a whole pass begun after this call."""
        self.start()
        with self._cond:
            self._requested += 1
            target = self._requested
            self._wake = True
            self._cond.notify_all()
            done = self._cond.wait_for(
                lambda: self._completed >= target or not self._thread.is_alive(), timeout
            )
        if not done:
            raise TimeoutError('email delivery did not finish a pass in time')

    def stop(self, timeout=None):
        """Ask the worker to finish its current message and stop; wait for it."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout if timeout is not None else self.app.config['MAIL_TIMEOUT'] + 5)

    def _run(self):
        poll = self.app.config['MAIL_POLL_INTERVAL']
        while True:
            with self._cond:
                if self._stopping:
                    return
                seen = self._requested
                self._wake = False
            delay = poll
            with self.app.app_context():
                try:
                    deliver_pending()
                    due = next_due_at()
                    if due is not None:
                        delay = min(poll, max((due - utcnow()).total_seconds(), 0))
                except Exception:
                    # The boundary of the worker: log and go on, never die.
                    self.app.logger.exception('Email delivery pass failed')
                    delay = min(poll, 5)
                finally:
                    db.session.remove()
            with self._cond:
                self._completed = seen
                self._cond.notify_all()
                self._cond.wait_for(lambda: self._wake or self._stopping, timeout=delay)


class RQBackend:
    """Delivery passes run as jobs in RQ workers (`flask mail worker` or `rq worker`)."""

    def __init__(self, app):
        self.app = app
        self._queue = None

    @property
    def queue(self):
        if self._queue is None:
            from redis import Redis
            from rq import Queue

            connection = Redis.from_url(self.app.config['REDIS_URL'])
            self._queue = Queue(self.app.config['MAIL_RQ_QUEUE'], connection=connection)
        return self._queue

    def start(self):
        """The web process starts no delivery thread: workers do the sending."""

    def notify(self):
        """Enqueue a delivery pass; if Redis is down the message waits for the next pass."""
        from redis.exceptions import RedisError

        try:
            self.queue.enqueue(
                run_delivery_job, job_timeout=self._job_timeout(), result_ttl=0, failure_ttl=86400
            )
        except RedisError as exc:
            self.app.logger.warning('Could not enqueue email delivery (%s); it stays pending', exc)

    def schedule(self, when):
        """Enqueue a delivery pass for when the next retry is due."""
        self.queue.enqueue_at(
            when,
            run_delivery_job,
            job_id=f'{self.queue.name}-pass-{int(when.timestamp())}',
            job_timeout=self._job_timeout(),
            result_ttl=0,
        )

    def _job_timeout(self):
        config = self.app.config
        return config['MAIL_TIMEOUT'] * (config['MAIL_BATCH_SIZE'] + 5) + 60

    def flush(self, timeout=30):
        """Nothing to wait for here: the workers are other processes."""

    def stop(self, timeout=None):
        """Nothing runs in this process."""


class ManualBackend:
    """Messages are only stored; `flask mail send-pending` (from cron) delivers them."""

    def __init__(self, app):
        self.app = app

    def start(self):
        """Nothing to start."""

    def notify(self):
        """Nothing to wake."""

    def flush(self, timeout=30):
        """Nothing to wait for."""

    def stop(self, timeout=None):
        """Nothing to stop."""


_worker_app = None


def run_delivery_job():
    """RQ job: one delivery pass, then a pass scheduled for the next retry."""
    global _worker_app
    if has_app_context():
        app = current_app._get_current_object()
    else:
        # A plain `rq worker` process has no app: make one, once per process.
        if _worker_app is None:
            from app import create_app

            _worker_app = create_app()
        app = _worker_app
    with app.app_context():
        try:
            report = deliver_pending()
            due = next_due_at()
        finally:
            db.session.remove()
        backend = app.extensions['mail_delivery']
        if isinstance(backend, RQBackend):
            poll = timedelta(seconds=app.config['MAIL_POLL_INTERVAL'])
            when = min(due, utcnow() + poll) if due is not None else utcnow() + poll
            backend.schedule(when)
    return {
        'sent': len(report.sent),
        'retrying': len(report.retrying),
        'failed': len(report.failed),
    }


class MailDelivery:
    """Binds the configured delivery backend to each app."""

    backends = {'thread': ThreadBackend, 'rq': RQBackend, 'none': ManualBackend}

    def init_app(self, app):
        app.config.setdefault('MAIL_RQ_QUEUE', RQ_QUEUE_NAME)
        backend = self.backends[app.config['MAIL_QUEUE']](app)
        app.extensions['mail_delivery'] = backend
        # The first request of a process starts its worker, which picks up
        # whatever an earlier process left pending.
        app.before_request(backend.start)

    @property
    def backend(self):
        return current_app.extensions['mail_delivery']

    def notify(self):
        self.backend.notify()

    def flush(self, timeout=30):
        self.backend.flush(timeout)


delivery = MailDelivery()
