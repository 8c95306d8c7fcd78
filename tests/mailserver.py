"""A real SMTP server (aiosmtpd) on a free loopback port, scriptable for failures."""

import email
import email.policy
import socket
import threading
from dataclasses import dataclass

from aiosmtpd.controller import Controller


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list
    message: email.message.EmailMessage

    def part(self, content_type):
        """The decoded body of the part with this content type."""
        for part in self.message.walk():
            if part.get_content_type() == content_type:
                return part.get_content()
        raise LookupError(content_type)


class RecordingHandler:
    """Keeps every message; answers DATA from a script first (e.g. '451 try later')."""

    def __init__(self):
        self.messages = []
        self.connections = 0
        self.data_attempts = 0
        self.script = []
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        with self.lock:
            self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        with self.lock:
            self.data_attempts += 1
            answer = self.script.pop(0) if self.script else '250 Message accepted'
            if not answer.startswith('250'):
                return answer
            message = email.message_from_bytes(envelope.content, policy=email.policy.default)
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
            self.arrived.notify_all()
        return answer


class MailServer:
    """An aiosmtpd server on 127.0.0.1; start() and stop() may be called more than once.

    ``ssl_context`` makes it speak TLS from the first byte (as on port 465); other
    keywords go to aiosmtpd's SMTP (``tls_context`` for STARTTLS, ``authenticator``).
    """

    def __init__(self, port=None, ssl_context=None, **smtp_options):
        self.port = port or free_port()
        self.handler = RecordingHandler()
        self.controller = None
        self.ssl_context = ssl_context
        self.smtp_options = smtp_options

    @property
    def messages(self):
        return self.handler.messages

    def wait_for(self, wanted, timeout=30):
        """The first message for which ``wanted(received)`` is true, waiting for it to arrive."""
        handler = self.handler
        with handler.arrived:
            found = handler.arrived.wait_for(
                lambda: next((m for m in handler.messages if wanted(m)), None), timeout
            )
        if found is None:
            raise AssertionError(f'no such message arrived in {timeout} s')
        return found

    def start(self):
        self.controller = Controller(
            self.handler,
            hostname='127.0.0.1',
            port=self.port,
            ssl_context=self.ssl_context,
            **self.smtp_options,
        )
        self.controller.start()
        return self

    def stop(self):
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


def accept_login(username, password):
    """An aiosmtpd authenticator that accepts this one login and refuses every other."""
    from aiosmtpd.smtp import AuthResult, LoginPassword

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data == LoginPassword(
            username.encode(), password.encode()
        )
        return AuthResult(success=ok, handled=False)

    return authenticate


class HangUpServer:
    """A TCP server that accepts connections and closes them at once, like a crashing server."""

    def __init__(self, port=None):
        self.port = port or free_port()
        self.accepted = 0
        self._sock = socket.create_server(('127.0.0.1', self.port))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        while not self._stop.is_set():
            try:
                connection, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            connection.close()

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        self._sock.close()
