"""The kinds of email a feature sends: a name, a subject, templates and a builder.

A feature registers each kind it sends with ``@email_kind``. What the outbox stores
for a message is only the kind's name and the data the feature queued it with; the
builder turns that data, at the moment of sending, into an ``Envelope``: the address
to send to and the context of the kind's templates (``email/<kind>.txt`` and
``.html``). So a link in an email is minted as the message leaves, never stored,
and the email is written in its recipient's language as it leaves: the builder says
which (``Envelope.locale``), and the subject, marked with ``lazy_gettext``, is
rendered with the bodies in it.
"""

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Envelope:
    """What a builder returns: the address to send to and the templates' context.

    A builder with nothing to send may still return an envelope with ``decoy`` set
    to the reason: the message is rendered and built as if real, then dropped, so
    that the work of a pass does not tell whether there was something to send.
    """

    to: str
    context: dict = field(default_factory=dict)
    decoy: str | None = None
    # The recipient's language ('en', 'zh_CN'): the subject and both bodies are
    # rendered in it. None: the site's default, English.
    locale: str | None = None


class DropMessage(Exception):  # noqa: N818 - reads as what the builder does
    """Raised by a builder when there is nothing to send, with the reason for the log."""


@dataclass(frozen=True)
class Kind:
    """A registered kind of email."""

    name: str
    # A lazy string (lazy_gettext): rendered in the recipient's language when sent.
    subject: str
    build: Callable[[dict], Envelope]
    # Whether queueing one wakes the delivery worker at once. A kind whose work
    # depends on something a visitor must not learn (whether an address has an
    # account) waits for the worker's own cadence instead.
    wake: bool = True
    # Whether the message carries a link that is only worth sending while the
    # request is fresh: older than MAIL_LINK_MAX_AGE, it is dropped.
    expires: bool = False
    # The templates' name, when it is not the kind's.
    template: str | None = None

    @property
    def templates(self):
        name = self.template or self.name
        return f'email/{name}.txt', f'email/{name}.html'


_kinds: dict[str, Kind] = {}


def email_kind(name, *, subject, wake=True, expires=False, template=None):
    """Register the decorated function as the builder of the kind of email ``name``."""

    def register(build):
        _kinds[name] = Kind(name, subject, build, wake=wake, expires=expires, template=template)
        return build

    return register


def get_kind(name):
    """The registered kind called ``name``, or None."""
    return _kinds.get(name)
