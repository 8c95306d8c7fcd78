"""Production logging: a rotating file or stdout, and errors emailed to the admins.

Error emails go over the same SMTP settings as every other email (MAIL_USE_SSL,
MAIL_USE_TLS with a verified certificate, MAIL_TIMEOUT, the login), on a thread of
their own so that a slow mail server never holds up a page. Each kind of error (the
exception and where it was raised, or where an error without one was logged) is
emailed at most once every ERROR_MAIL_INTERVAL seconds from each process; the next
email says how many more there were. What could be a secret is taken out first.
"""

import logging
import os
import queue
import re
import smtplib
import socket
import sys
import threading
import time
import traceback
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener, RotatingFileHandler
from urllib.parse import urlsplit

from flask import render_template
from flask_babel import force_locale
from flask_mail import Message

from app.addresses import smtp_address
from app.mail.smtp import SMTPConnection, smtp_sender
from config import basedir

# Loggers besides the app's whose lines belong in its log: Flask-Limiter says there
# when its Redis storage is unreachable and it falls back to counting in memory.
OTHER_LOGGERS = ('flask-limiter',)


def configure_production_logging(app):
    """Log to a rotating file (or stdout) and email errors to the admins."""
    handlers = []
    if app.config['LOG_TO_STDOUT']:
        handlers.append(logging.StreamHandler())
    else:
        os.makedirs('logs', exist_ok=True)
        file_handler = RotatingFileHandler('logs/microblog.log', maxBytes=10240, backupCount=10)
        file_handler.setFormatter(
            logging.Formatter('%(asctime)s %(levelname)s: %(message)s [in %(pathname)s:%(lineno)d]')
        )
        handlers.append(file_handler)
    for handler in handlers:
        handler.setLevel(logging.INFO)

    if app.config['MAIL_SERVER']:
        error_mail = AdminErrorMail(app)
        error_mail.listener.start()
        app.extensions['error_mail'] = error_mail
        app.extensions['error_mail_listener'] = error_mail.listener
        handlers.append(error_mail)

    for logger in (app.logger, *map(logging.getLogger, OTHER_LOGGERS)):
        for handler in handlers:
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def error_kind(record):
    """What makes two errors "the same": the exception and where it was raised, else the call."""
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        frames = traceback.extract_tb(exc.__traceback__)
        if frames:
            where = f'{_short_path(frames[-1].filename)}:{frames[-1].lineno}'
        else:
            where = f'{_short_path(record.pathname)}:{record.lineno}'
        return f'{type(exc).__name__} at {where}'
    return f'{record.levelname} logged at {_short_path(record.pathname)}:{record.lineno}'


def _short_path(path):
    """A source path from the project's folder (or site-packages) on, as an admin reads it."""
    if path.startswith(basedir + os.sep):
        return os.path.relpath(path, basedir)
    marker = os.sep + 'site-packages' + os.sep
    return path.rsplit(marker, 1)[1] if marker in path else path


class AdminErrorMail(QueueHandler):
    """ERROR records, one per kind per ERROR_MAIL_INTERVAL, queued for the admins' email thread.

    The throttle is decided here, in the thread that logged, so that a storm of
    errors queues one record per kind, not thousands.
    """

    def __init__(self, app, clock=time.monotonic):
        super().__init__(queue.SimpleQueue())
        self.setLevel(logging.ERROR)
        self.interval = app.config['ERROR_MAIL_INTERVAL']
        self.clock = clock
        self._lock = threading.Lock()
        self._last = {}  # kind -> [when it was last emailed, how many since were not]
        self.listener = QueueListener(self.queue, ErrorMailSender(app))

    def emit(self, record):
        kind = error_kind(record)
        now = self.clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last[0] < self.interval:
                last[1] += 1
                return
            record.error_kind = kind
            record.not_emailed = last[1] if last is not None else 0
            self._last[kind] = [now, 0]
        # prepare() then formats the message with its traceback, for the other thread.
        super().emit(record)


class ErrorMailSender(logging.Handler):
    """Sends one prepared error record to ADMINS, over the app's SMTP settings."""

    def __init__(self, app):
        super().__init__(logging.ERROR)
        self.app = app

    def emit(self, record):
        app = self.app
        try:
            with app.app_context():
                message = build_error_report(app, record)
                with SMTPConnection(app.extensions['mail']) as connection:
                    connection.send(message)
        except (smtplib.SMTPException, OSError) as exc:
            # Logging it would come back here: say it once on stderr.
            print(
                f'Could not email an error report to the admins: {type(exc).__name__}: {exc}',
                file=sys.stderr,
            )


def build_error_report(app, record):
    """The email about ``record``: what went wrong, where, and how often, with no secrets."""
    redact = Redactor(app.config)
    context = {
        'kind': redact(record.error_kind),
        'report': redact(record.getMessage()),
        'host': socket.gethostname(),
        'pid': os.getpid(),
        'when': datetime.fromtimestamp(record.created, UTC).strftime('%Y-%m-%d %H:%M:%S UTC'),
        'not_emailed': record.not_emailed,
        'interval': app.config['ERROR_MAIL_INTERVAL'],
    }
    # For the admins, in English like the log it comes from: never in the language
    # of the visitor whose request failed.
    with force_locale('en'):
        return Message(
            f'[Microblog] Error: {context["kind"]}'[:200],
            sender=smtp_sender(app.config['MAIL_DEFAULT_SENDER']),
            recipients=[smtp_address(address) for address in app.config['ADMINS']],
            body=render_template('email/error_report.txt', **context),
            html=render_template('email/error_report.html', **context),
        )


# A JWT (a reset link's token), wherever it appears: in a logged URL or a message.
TOKEN = re.compile(r'eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,}')
# The password in a URL such as postgresql://user:password@host/db.
URL_PASSWORD = re.compile(r'(\w[\w+.-]*://[^:/@\s]*):[^@/\s]+@')
# The values SQLAlchemy prints with a failed statement: they can hold password hashes.
SQL_PARAMETERS = re.compile(r'^\[parameters: .*$', re.MULTILINE)


class Redactor:
    """Takes secrets out of a text: configured keys and passwords, tokens, SQL parameters."""

    def __init__(self, config):
        secrets = [config.get('SECRET_KEY'), config.get('MAIL_PASSWORD')]
        secrets += list(config.get('SECRET_KEY_FALLBACKS') or [])
        for name in ('SQLALCHEMY_DATABASE_URI', 'REDIS_URL', 'RATELIMIT_STORAGE_URI'):
            value = config.get(name)
            if isinstance(value, str):
                secrets.append(urlsplit(value).password)
        # Longest first, so that a secret containing another is hidden whole.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text):
        for secret in self.secrets:
            text = text.replace(secret, '[hidden]')
        text = TOKEN.sub('[token]', text)
        text = URL_PASSWORD.sub(r'\1:[hidden]@', text)
        return SQL_PARAMETERS.sub('[parameters hidden]', text)
