"""A kind of email for the delivery tests: sent to whatever address its data names."""

from app.mail import Envelope, email_kind

TEST_KIND = 'delivery_test'


@email_kind(TEST_KIND, subject='[Microblog] Delivery test', template='test')
def build_delivery_test(data):
    """Uses the `flask mail test` templates; the label shows in the body."""
    return Envelope(to=data['to'], context={'server': data['label']})


def label_of(received):
    """The label a test message was queued with, read from its text body."""
    text = received.part('text/plain')
    return text.split('email delivery through ', 1)[1].split(' works.', 1)[0]


BROKEN_KIND = 'broken_builder'


@email_kind(BROKEN_KIND, subject='[Microblog] Never built', template='test')
def build_broken(data):
    """A builder with a bug: it raises what no SMTP error handler expects."""
    raise RuntimeError(f'builder bug for {data.get("to")}')
