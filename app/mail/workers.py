"""Delivery workers: who runs the passes, and when.

- ``thread`` (default): one worker thread per process, started with the process. It
  runs a pass when woken (a message of a waking kind was committed), when a retry
  falls due, and every MAIL_POLL_INTERVAL seconds: its cadence, on which it takes the
  kinds that must not wake it and whatever other processes stored.
- ``rq``: passes run as jobs in RQ workers (``flask mail worker`` or ``rq worker``),
  on other machines if need be; the web process only enqueues.
- ``none``: messages are only stored; cron runs ``flask mail send-pending``.
"""

import atexit
import math
import random
import threading
from datetime import UTC, datetime

import sqlalchemy as sa
from flask import current_app, has_app_context

from app import db
from app.mail.kinds import get_kind
from app.mail.outbox import QUEUED_KINDS, deliver_pending, next_retry_at
from app.models import utcnow

# The worker's beat draws from the operating system: drawing from the process's shared
# generator in a background thread moved its state under whatever else was using it
# (Hypothesis, in the tests, refuses a draw during which it moved), and a generator of
# its own would repeat its parent's numbers in every forked process.
_jitter = random.SystemRandom()


class ThreadBackend:
    """One delivery worker thread per process, woken when a message is stored or a retry is due."""

    def __init__(self, app):
        self.app = app
        self._cond = threading.Condition()
        self._thread = None
        self._stopping = False
        self._wake = False
        self._requested = 0
        self._completed = 0

    def _alive(self):
        # In a process forked from this one, a thread started before the fork is not alive.
        return self._thread is not None and self._thread.is_alive()

    def start(self):
        """Start the worker thread in this process if it is not running."""
        with self._cond:
            if self._alive() and not self._stopping:
                return
            self._stopping = False
            self._thread = threading.Thread(
                target=self._run, name='microblog-mail-delivery', daemon=True
            )
            self._thread.start()
        # At exit, the pass under way finishes (stop is registered once, however often
        # the worker starts).
        atexit.unregister(self.stop)
        atexit.register(self.stop)

    def notify(self, *, wake):
        """A message was stored: wake the worker, or (``wake=False``) leave it to the cadence."""
        self.start()
        if not wake:
            return
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

    def stop(self):
        """Ask the worker to finish its pass and stop; wait for it, as long as one message takes."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(self.app.config['MAIL_TIMEOUT'] + 5)

    def _run(self):
        poll = self.app.config['MAIL_POLL_INTERVAL']
        while True:
            with self._cond:
                if self._stopping:
                    return
                seen = self._requested
                self._wake = False
            # Each process keeps its own irregular beat, so that the workers of several
            # processes spread their passes instead of running them together.
            delay = poll * _jitter.uniform(0.75, 1.25)
            with self.app.app_context():
                try:
                    deliver_pending()
                    retry = next_retry_at()
                    if retry is not None:
                        delay = min(delay, max((retry - utcnow()).total_seconds(), 0))
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

    def notify(self, *, wake):
        """Enqueue a pass now, or (``wake=False``) make sure one runs at the next cadence tick.

        If Redis is down the message stays pending for a later pass.
        """
        from redis.exceptions import RedisError

        try:
            if wake:
                self.queue.enqueue(
                    run_delivery_job,
                    job_timeout=self._job_timeout(),
                    result_ttl=0,
                    failure_ttl=86400,
                )
            else:
                self.schedule(utcnow())
        except RedisError as exc:
            self.app.logger.warning('Could not enqueue email delivery (%s); it stays pending', exc)

    def schedule(self, when):
        """Make sure a pass runs at the first cadence tick after ``when``.

        Ticks are whole multiples of MAIL_POLL_INTERVAL and a tick's job has one id,
        so however many workers and requests ask, each tick runs one pass.
        """
        poll = max(1, self.app.config['MAIL_POLL_INTERVAL'])
        tick = math.floor(when.timestamp() / poll) + 1
        self.queue.enqueue_at(
            datetime.fromtimestamp(tick * poll, UTC),
            run_delivery_job,
            job_id=f'{self.queue.name}-pass-{tick}',
            job_timeout=self._job_timeout(),
            result_ttl=0,
            failure_ttl=86400,
        )

    def _job_timeout(self):
        config = self.app.config
        per_sender = config['MAIL_TIMEOUT'] * (config['MAIL_BATCH_SIZE'] + 5)
        return per_sender * 10 + 60

    def flush(self, timeout=None):
        """Nothing to wait for here: the workers are other processes."""

    def stop(self):
        """Nothing runs in this process."""


class ManualBackend:
    """Messages are only stored; `flask mail send-pending` (from cron) delivers them."""

    def __init__(self, app):
        """Made with its app like every backend; it keeps nothing, since it runs nothing."""

    def start(self):
        """Nothing to start."""

    def notify(self, *, wake):
        """Nothing to wake."""

    def flush(self, timeout=None):
        """Nothing to wait for."""

    def stop(self):
        """Nothing to stop."""


_worker_app = None


def run_delivery_job():
    """RQ job: one delivery pass, then a pass scheduled for the next retry or cadence tick."""
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
            retry = next_retry_at()
        finally:
            db.session.remove()
        backend = app.extensions['mail_delivery']
        if isinstance(backend, RQBackend):
            # The cadence goes on: a tick picks up kinds that do not wake, and claims
            # left by a worker that died.
            backend.schedule(min(retry, utcnow()) if retry is not None else utcnow())
    return {
        'sent': len(report.sent),
        'retrying': len(report.retrying),
        'failed': len(report.failed),
        'dropped': len(report.dropped),
    }


class MailDelivery:
    """Binds the configured delivery backend to each app, and wakes it after commits."""

    backends = {'thread': ThreadBackend, 'rq': RQBackend, 'none': ManualBackend}

    def init_app(self, app):
        """Bind the backend; a process that serves starts it (see ``app.start_serving``)."""
        app.extensions['mail_delivery'] = self.backends[app.config['MAIL_QUEUE']](app)

    @property
    def backend(self):
        return current_app.extensions['mail_delivery']

    def notify(self, *, wake):
        """Tell the backend that messages were committed."""
        self.backend.notify(wake=wake)


@sa.event.listens_for(db.session, 'after_commit')
def _notify_after_commit(session):
    """Once the messages queued in a transaction are committed, tell the backend about them."""
    kinds = session.info.pop(QUEUED_KINDS, None)
    if kinds and has_app_context():
        delivery.notify(wake=any(get_kind(name).wake for name in kinds))


@sa.event.listens_for(db.session, 'after_rollback')
def _forget_queued(session):
    session.info.pop(QUEUED_KINDS, None)


delivery = MailDelivery()
