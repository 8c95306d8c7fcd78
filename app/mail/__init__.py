"""Email: a durable outbox of registered kinds, rendered and sent in the background.

    feature ──queue_email(kind, data)──► outbox row, committed with the feature's change
                                              │
    delivery worker (thread | RQ | cron) ◄─── claims due rows, a lease each
         │  build the envelope, render the kind's templates now, send
         ▼  over a few SMTP connections at once
    SMTP server ──► sent | retried later (backoff) | dropped | failed (logged once)

The package knows no feature: a feature registers the kinds it sends with
``email_kind`` (templates ``email/<kind>.txt`` and ``.html`` and a builder), and
queues them with ``queue_email`` or ``send_email``.
"""

from app.addresses import (
    UndeliverableAddressError,
    deliverable_address,
    lookup_key,
    normalize_address,
    smtp_address,
)
from app.mail.kinds import DropMessage, Envelope, email_kind
from app.mail.outbox import deliver_pending, queue_email, send_email
from app.mail.workers import delivery

__all__ = [
    'DropMessage',
    'Envelope',
    'UndeliverableAddressError',
    'deliver_pending',
    'deliverable_address',
    'delivery',
    'email_kind',
    'lookup_key',
    'normalize_address',
    'queue_email',
    'send_email',
    'smtp_address',
]
