"""The local mail sink for development: an SMTP server that keeps what it receives.

Messages are kept in a Maildir (``instance/mail-sink-<port>``), the standard one-file-
per-message format any mail reader opens: the server writes each one atomically, and
the debug-only inbox page (``/_mail``) reads them, with no second port and no protocol
of our own. The folder lives as long as the sink: emptied when it starts, removed when
it stops, so the inbox survives restarts of the app (`make run` runs the app under the
sink) and not of the sink.
"""

import email
import email.policy
import mailbox
import os
import shutil
import socket


def sink_folder(app, port):
    """Where the sink on ``port`` keeps its messages, and where the inbox page reads them."""
    return os.path.join(app.instance_path, f'mail-sink-{port}')


def open_inbox(folder):
    """The sink's Maildir in ``folder``, or None when no sink keeps one there."""
    if not os.path.isdir(os.path.join(folder, 'new')):
        return None
    return mailbox.Maildir(folder, factory=None, create=False)


def read_message(inbox, key):
    """The message ``key`` of ``inbox``, parsed (KeyError when there is none)."""
    return email.message_from_bytes(inbox.get_bytes(key), policy=email.policy.default)


class KeepingHandler:
    """aiosmtpd handler that keeps each message in the Maildir and announces it."""

    def __init__(self, announce):
        self.inbox = None  # set once the port is bound
        self.announce = announce

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        if self.inbox is None:
            return '451 The sink is starting, try again'
        # As a mail server's local delivery would: the envelope, which Bcc leaves out.
        trace = [f'Return-Path: <{envelope.mail_from}>']
        trace += [f'Delivered-To: {recipient}' for recipient in envelope.rcpt_tos]
        content = envelope.original_content or envelope.content
        key = self.inbox.add(('\r\n'.join(trace) + '\r\n').encode() + content)
        self.announce(key, read_message(self.inbox, key))
        return '250 Message accepted for delivery'


class MailSink:
    """An aiosmtpd server on ``host:port`` keeping what it receives in ``folder``."""

    def __init__(self, host, port, folder, announce=lambda key, message: None):
        self.host = host
        self.port = port
        self.folder = folder
        self.announce = announce
        self.controller = None

    def start(self):
        """Bind the port (an OSError when it is taken), then empty and open the folder."""
        from aiosmtpd.controller import Controller

        # aiosmtpd takes seconds to report a port that is taken: find out at once.
        socket.create_server((self.host, self.port)).close()
        handler = KeepingHandler(self.announce)
        controller = Controller(handler, hostname=self.host, port=self.port)
        try:
            controller.start()  # only then is the folder this sink's to empty
        except OSError:
            controller.loop.close()  # aiosmtpd leaves it open when it cannot bind
            raise
        self.controller = controller
        shutil.rmtree(self.folder, ignore_errors=True)
        os.makedirs(os.path.dirname(self.folder), exist_ok=True)
        handler.inbox = mailbox.Maildir(self.folder, factory=None, create=True)
        return self

    def stop(self):
        """Stop serving and forget every message."""
        if self.controller is not None:
            self.controller.stop()
            self.controller = None
        shutil.rmtree(self.folder, ignore_errors=True)
