"""The outbox: messages stored as what to send, claimed atomically, sent, retried or failed.

``queue_email`` adds a row (kind, data) in the caller's transaction. A delivery pass
claims due rows in small batches, a lease each, on several SMTP connections at once;
for each message it builds the envelope and renders the kind's templates now (so a
link is minted as it leaves), sends, and records the outcome: sent, retried later with
exponential backoff, dropped (nothing to send, or a link request that waited too long)
or failed. Whatever goes wrong with one message is that message's outcome alone.
"""

import os
import smtplib
import socket
import threading
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app, render_template
from flask_babel import force_locale

from app import db
from app.i18n import DEFAULT_LOCALE
from app.mail.kinds import DropMessage, get_kind
from app.mail.smtp import Courier, build_message
from app.models import OutboundEmail, utcnow

# The session remembers which kinds were queued in its transaction, so that the
# worker is told once they are committed (see workers.py).
QUEUED_KINDS = 'mail_queued_kinds'


def queue_email(kind, data, recipient=None):
    """Add a message of a registered kind to the outbox in the current transaction.

    ``data`` (JSON) is what the kind's builder gets at send time: ids and addresses,
    never a token or a rendered body. ``recipient`` is shown to admins until the
    message is sent, when the builder's address replaces it.
    """
    if get_kind(kind) is None:
        raise LookupError(f'no kind of email is registered as {kind!r}')
    # Pending, never tried, due at once: the model's defaults for a new row.
    email = OutboundEmail(kind=kind, data=dict(data), recipient=recipient)
    db.session.add(email)
    db.session.info.setdefault(QUEUED_KINDS, set()).add(kind)
    return email


def send_email(kind, data, recipient=None):
    """Queue a message and commit: it is stored when this returns, and sent in the background."""
    email = queue_email(kind, data, recipient)
    db.session.commit()
    return email


@dataclass
class DeliveryReport:
    """What one delivery pass did, by message id."""

    sent: list = field(default_factory=list)
    retrying: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    dropped: list = field(default_factory=list)

    @property
    def attempted(self):
        return len(self.sent) + len(self.retrying) + len(self.failed) + len(self.dropped)


def backoff_seconds(attempts):
    """Seconds to wait before the next attempt: doubling from MAIL_RETRY_BACKOFF, capped."""
    config = current_app.config
    delay = config['MAIL_RETRY_BACKOFF'] * 2 ** max(attempts - 1, 0)
    # At least a second, so that one pass never tries the same message twice.
    return max(1, min(delay, config['MAIL_RETRY_BACKOFF_MAX']))


# Answers about one message; every other SMTP error is about the server, the
# connection or our own settings (a refused login, a refused sender), and no
# message should be given up on for it.
MESSAGE_ANSWERS = (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError)


def is_permanent(exc):
    """Whether the server's answer about this message means "never" (5xx) rather than "not now"."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return bool(codes) and all(500 <= code < 600 for code in codes)
    if isinstance(exc, smtplib.SMTPDataError):
        return 500 <= exc.smtp_code < 600
    return False


def closes_connection(exc):
    """Whether the server hung up with this answer (421), so the next message needs a new one."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return any(code == 421 for code, _ in exc.recipients.values())
    return getattr(exc, 'smtp_code', None) == 421


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


def clean_error(text, limit=1000):
    """An error as stored and logged: no NUL (PostgreSQL cannot store one), not too long."""
    text = text.replace('\x00', '\\x00')
    return text if len(text) <= limit else text[: limit - 1] + '…'


def _due(now):
    """Pending and due, or claimed by a worker whose lease has run out."""
    return sa.or_(
        sa.and_(
            OutboundEmail.status == OutboundEmail.PENDING, OutboundEmail.next_attempt_at <= now
        ),
        sa.and_(OutboundEmail.status == OutboundEmail.SENDING, OutboundEmail.claimed_until < now),
    )


def candidate_ids(now, limit):
    """The ids of up to ``limit`` due messages, oldest first, skipping rows being claimed."""
    query = (
        sa.select(OutboundEmail.id)
        .where(_due(now))
        .order_by(OutboundEmail.next_attempt_at, OutboundEmail.id)
        .limit(limit)
        # PostgreSQL: rows another worker is claiming right now are passed over, not waited for.
        .with_for_update(skip_locked=True)
    )
    return list(db.session.scalars(query))


@dataclass(frozen=True)
class Claimed:
    """A message a sender holds: what it needs to send it, read once when it was claimed."""

    id: int
    kind: str
    data: dict
    attempts: int
    recipient: str | None
    created_at: datetime
    claimed_until: datetime


def _lease_from(now):
    """When a lease taken now runs out (``now`` may be later than the clock in tests)."""
    lease = timedelta(seconds=current_app.config['MAIL_CLAIM_TIMEOUT'])
    return max(now, utcnow()) + lease


def take(ids, now, worker):
    """Mark those of ``ids`` that are still due as being sent by ``worker``; what was taken.

    The due condition is checked again in the UPDATE itself: a row another worker
    took since ``candidate_ids`` read it is no longer due, and is left to that worker.
    """
    if not ids:
        db.session.commit()
        return []
    claimed_until = _lease_from(now)
    claim = (
        sa.update(OutboundEmail)
        .where(OutboundEmail.id.in_(ids), _due(now))
        .values(status=OutboundEmail.SENDING, claimed_by=worker, claimed_until=claimed_until)
        .returning(
            OutboundEmail.id,
            OutboundEmail.kind,
            OutboundEmail.data,
            OutboundEmail.attempts,
            OutboundEmail.recipient,
            OutboundEmail.created_at,
        )
        .execution_options(synchronize_session=False)
    )
    rows = db.session.execute(claim).all()
    db.session.commit()
    taken = [Claimed(*row, claimed_until=claimed_until) for row in rows]
    return sorted(taken, key=lambda email: email.id)


def renew(emails, now, worker):
    """Extend the lease on messages ``worker`` still holds; those it still holds, renewed."""
    claimed_until = _lease_from(now)
    held = set(
        db.session.scalars(
            sa.update(OutboundEmail)
            .where(
                OutboundEmail.id.in_([email.id for email in emails]),
                OutboundEmail.claimed_by == worker,
                OutboundEmail.status == OutboundEmail.SENDING,
            )
            .values(claimed_until=claimed_until)
            .returning(OutboundEmail.id)
            .execution_options(synchronize_session=False)
        )
    )
    db.session.commit()
    return [replace(email, claimed_until=claimed_until) for email in emails if email.id in held]


def claim_due(now, worker, limit):
    """Atomically claim up to ``limit`` due messages for ``worker``, with a lease; the rows."""
    return take(candidate_ids(now, limit), now, worker)


def count_due(now, most):
    """How many messages are due, counting up to ``most``: a pass that finds none writes nothing."""
    due = sa.select(OutboundEmail.id).where(_due(now)).limit(most).subquery()
    count = db.session.scalar(sa.select(sa.func.count()).select_from(due))
    db.session.commit()
    return count


def deliver_pending(now=None):
    """Run one delivery pass: send every message that is due, on several connections at once."""
    now = now or utcnow()
    report = DeliveryReport()
    connections = max(1, current_app.config['MAIL_CONNECTIONS'])
    senders = count_due(now, connections)
    if senders <= 1:
        if senders:
            _send_due(now, report)
        return report
    app = current_app._get_current_object()
    senders = [
        threading.Thread(
            target=_sender, args=(app, now, report), name=f'microblog-mail-sender-{number}'
        )
        for number in range(senders)
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    return report


def _sender(app, now, report):
    """One of a pass's parallel senders, in an app context (and database session) of its own."""
    with app.app_context():
        try:
            _send_due(now, report)
        except Exception:
            # The boundary of a sender thread: what it claimed is taken over when the
            # lease runs out; the other senders go on.
            app.logger.exception('An email sender stopped')
        finally:
            db.session.remove()


def _send_due(now, report):
    """Claim and send batches until nothing is due, over one SMTP connection."""
    sender = Sender(now, report)
    config = current_app.config
    connections = max(1, config['MAIL_CONNECTIONS'])
    batch_size = max(1, config['MAIL_BATCH_SIZE'])
    try:
        while True:
            # Messages stored since the pass began are taken too; and claims shrink as
            # the queue empties, so that its tail is shared by every connection (of
            # every process) instead of waiting behind one sender's batch.
            current = max(now, utcnow())
            due = count_due(current, batch_size * connections * 2)
            size = max(1, min(batch_size, due // (connections * 2)))
            ids = candidate_ids(current, size)
            if not ids:
                return
            # Fewer, or none, are taken when another sender took them first: read again.
            sender.send_held(take(ids, current, sender.worker))
    finally:
        sender.courier.hang_up()


class Sender:
    """One sender of a pass: its name on the claims, its SMTP connection, the outcomes."""

    def __init__(self, now, report):
        self.now = now
        self.report = report
        self.worker = f'{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}'
        self.courier = Courier()

    def send_held(self, held):
        """Send the messages this sender holds, each only while its lease has time left.

        A slow server can outlast a lease: before a message whose lease would run
        out during an attempt, the lease of all still held is renewed, and those
        another worker took over meanwhile are left to it.
        """
        margin = timedelta(seconds=3 * current_app.config['MAIL_TIMEOUT'] + 5)
        held = list(held)
        while held:
            if max(self.now, utcnow()) + margin > held[0].claimed_until:
                held = renew(held, self.now, self.worker)
                if not held:
                    return
            self.deliver(held.pop(0))

    def deliver(self, email):
        """Build, render and send one claimed message, and record what came of it."""
        kind = get_kind(email.kind)
        if kind is None:
            return self.failed(email, f'no kind of email is registered as {email.kind!r}')
        max_age = current_app.config['MAIL_LINK_MAX_AGE']
        if kind.expires and self.now - email.created_at > timedelta(seconds=max_age):
            return self.dropped(
                email,
                f'waited longer than MAIL_LINK_MAX_AGE ({max_age} s): its link would come too late',
            )
        try:
            envelope = kind.build(email.data or {})
            text_template, html_template = kind.templates
            # In the recipient's language, whoever asked for it and in whatever language.
            with force_locale(envelope.locale or DEFAULT_LOCALE):
                message = build_message(
                    str(kind.subject),
                    envelope.to,
                    render_template(text_template, **envelope.context),
                    render_template(html_template, **envelope.context),
                )
        except DropMessage as exc:
            db.session.rollback()
            return self.dropped(email, str(exc))
        except Exception as exc:  # noqa: BLE001 - a message that cannot be built fails alone
            # A builder's failed query leaves the transaction aborted: start afresh.
            db.session.rollback()
            return self.failed(email, describe(exc), exc=exc)
        if envelope.decoy:
            # Built like a real message so that the pass costs the same; not sent.
            return self.dropped(email, envelope.decoy)
        try:
            self.courier.send(message, quiet=kind.expires)
        except MESSAGE_ANSWERS as exc:
            # The server said no to this message.
            if closes_connection(exc):
                self.courier.hang_up()
            self.failed(email, describe(exc), to=envelope.to, permanent=is_permanent(exc))
        except (smtplib.SMTPException, OSError) as exc:
            # Could not connect or log in, our sender was refused, the connection is
            # gone: not this message's fault, so it is tried again.
            self.courier.hang_up()
            self.failed(email, describe(exc), to=envelope.to, permanent=False)
        except Exception as exc:  # noqa: BLE001 - the message fails alone; the connection is reset
            self.courier.hang_up()
            self.failed(email, describe(exc), to=envelope.to, exc=exc)
        else:
            self.sent(email, envelope.to)

    def _record(self, email, **values):
        """Write an outcome, unless another worker took the message over (its lease ran out)."""
        if values.get('last_error'):
            values['last_error'] = clean_error(values['last_error'])
        update = (
            sa.update(OutboundEmail)
            .where(OutboundEmail.id == email.id, OutboundEmail.claimed_by == self.worker)
            .values(claimed_until=None, claimed_by=None, **values)
            .execution_options(synchronize_session=False)
        )
        try:
            db.session.execute(update)
            db.session.commit()
        except Exception:
            # The database itself failed: the pass stops (its boundary logs it) and the
            # lease brings the message back; the session is left usable.
            db.session.rollback()
            raise

    def sent(self, email, to):
        self._record(
            email,
            status=OutboundEmail.SENT,
            attempts=email.attempts + 1,
            recipient=to,
            sent_at=utcnow(),
            last_error=None,
        )
        self.report.sent.append(email.id)

    def dropped(self, email, reason):
        self._record(email, status=OutboundEmail.DROPPED, last_error=reason)
        current_app.logger.info('Email %s (%s) dropped: %s', email.id, email.kind, reason)
        self.report.dropped.append(email.id)

    def failed(self, email, error, to=None, permanent=True, exc=None):
        """Schedule a retry with backoff, or give up on a permanent error or the last attempt."""
        config = current_app.config
        attempts = email.attempts + 1
        to = to or email.recipient
        values = {'attempts': attempts, 'last_error': error, 'recipient': to}
        if permanent or attempts >= config['MAIL_MAX_ATTEMPTS']:
            self._record(email, status=OutboundEmail.FAILED, **values)
            # Logged once, when the message is given up on: at ERROR, so admins hear of it.
            current_app.logger.error(
                'Email %s (%s) to %s failed after %d attempt(s), giving up: %s',
                email.id,
                email.kind,
                to,
                attempts,
                clean_error(error),
                exc_info=exc,
            )
            self.report.failed.append(email.id)
            return
        delay = backoff_seconds(attempts)
        self._record(
            email,
            status=OutboundEmail.PENDING,
            next_attempt_at=self.now + timedelta(seconds=delay),
            **values,
        )
        current_app.logger.warning(
            'Email %s (%s) to %s not sent (attempt %d of %d), retrying in %d s: %s',
            email.id,
            email.kind,
            to,
            attempts,
            config['MAIL_MAX_ATTEMPTS'],
            delay,
            clean_error(error),
        )
        self.report.retrying.append(email.id)


def next_retry_at():
    """When the earliest retry or stale claim falls due, or None.

    Messages never tried yet are left out: those that wake the worker have done so,
    and the others wait for its cadence.
    """
    pending = db.session.scalar(
        sa.select(sa.func.min(OutboundEmail.next_attempt_at)).where(
            OutboundEmail.status == OutboundEmail.PENDING, OutboundEmail.attempts > 0
        )
    )
    claimed = db.session.scalar(
        sa.select(sa.func.min(OutboundEmail.claimed_until)).where(
            OutboundEmail.status == OutboundEmail.SENDING
        )
    )
    times = [t for t in (pending, claimed) if t is not None]
    return min(times) if times else None
