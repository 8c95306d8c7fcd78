"""The SMTP side: a connection with a timeout and a verified certificate, and messages in ASCII."""

import smtplib
import ssl
import sys

import flask_mail
from flask import current_app
from flask_mail import Message

from app.addresses import smtp_address, smtp_sender


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
        self.close()

    def close(self):
        """Say goodbye to the server; one that hangs up first changes nothing."""
        if self.host is None:
            return
        try:
            self.host.quit()
        except (smtplib.SMTPException, OSError):
            self.host.close()
        self.host = None


def connect():
    """An SMTP connection configured from the app's MAIL_* settings (open it with ``with``)."""
    return SMTPConnection(current_app.extensions['mail'])


def build_message(subject, to, text_body, html_body):
    """A Flask-Mail message whose addresses are all ASCII, checked to build."""
    message = Message(
        subject,
        sender=smtp_sender(current_app.config['MAIL_DEFAULT_SENDER']),
        recipients=[smtp_address(to)],
    )
    message.body = text_body
    message.html = html_body
    if message.has_bad_headers():
        raise flask_mail.BadHeaderError('a header of the message holds a line break')
    message.as_bytes()  # fails here, for this message alone, rather than mid-conversation
    return message


class Courier:
    """Sends over one SMTP connection, opened when first needed and again after a drop."""

    def __init__(self):
        self._connection = None

    def send(self, message, quiet=False):
        """Send ``message``; ``quiet`` keeps its text (a link) out of MAIL_DEBUG's printout."""
        if self._connection is None:
            connection = connect()
            connection.__enter__()
            self._connection = connection
        host = self._connection.host
        debug = host is not None and quiet and host.debuglevel
        if debug:
            host.set_debuglevel(0)
            print(
                f'[MAIL_DEBUG: the SMTP conversation of a message with a link to '
                f'{", ".join(message.recipients)} is not shown]',
                file=sys.stderr,
            )
        try:
            self._connection.send(message)
        finally:
            if debug:
                host.set_debuglevel(debug)

    def hang_up(self):
        """Close the connection (after an error that may have left it in an unknown state)."""
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()
