"""The inbox: the list of messages, one message as its recipient sees it, its HTML in a sandbox."""

import re
from email.utils import parsedate_to_datetime

from flask import abort, current_app, render_template
from markupsafe import Markup, escape

from app.devmail import bp
from app.mail.sink import open_inbox, read_message, sink_folder

# The HTML of an email is a page from elsewhere: no script, form, plugin or access to
# this site (an opaque origin); its inline styles and images load as in a mail
# reader, and a click on a link opens it in the whole window, as for its recipient.
EMAIL_CSP = '; '.join(
    [
        'sandbox allow-popups allow-popups-to-escape-sandbox '
        'allow-top-navigation-by-user-activation',
        "default-src 'none'",
        "style-src 'unsafe-inline'",
        'img-src https: data:',
        "frame-ancestors 'self'",
    ]
)
HEAD = re.compile(r'<head[^>]*>', re.IGNORECASE)
URL = re.compile(r'https?://[^\s<>"\']+')


@bp.app_template_filter('linkify')
def linkify(text):
    """Escaped text whose http(s) addresses are links, as a mail reader shows a text part."""
    return Markup(URL.sub(lambda found: f'<a href="{found[0]}">{found[0]}</a>', str(escape(text))))


def the_inbox():
    """The Maildir of the sink the app sends to (MAIL_PORT), or None when none runs."""
    return open_inbox(sink_folder(current_app, current_app.config['MAIL_PORT']))


def message_or_404(key):
    inbox = the_inbox()
    if inbox is None:
        abort(404)
    try:
        return read_message(inbox, key)
    except KeyError:
        abort(404)


def sent_at(message):
    """When the message was sent, by its Date header, or None."""
    try:
        return parsedate_to_datetime(message['Date'])
    except (TypeError, ValueError):
        return None


@bp.route('')
def inbox():
    """Every message the sink keeps, newest first."""
    inbox = the_inbox()
    messages = []
    for key in inbox.keys() if inbox is not None else []:
        try:
            messages.append((key, read_message(inbox, key)))
        except KeyError:
            continue  # the sink stopped meanwhile
    messages.sort(key=lambda item: (sent_at(item[1]) is not None, sent_at(item[1]), item[0]))
    messages.reverse()
    return render_template(
        'devmail/inbox.html',
        title='Mail',
        running=inbox is not None,
        messages=messages,
        sent_at=sent_at,
    )


@bp.route('/<key>')
def message(key):
    """One message: its headers, its HTML as the recipient sees it, and its text."""
    message = message_or_404(key)
    html = message.get_body(preferencelist=('html',))
    text = message.get_body(preferencelist=('plain',))
    return render_template(
        'devmail/message.html',
        title=message['Subject'] or 'Mail',
        key=key,
        message=message,
        has_html=html is not None,
        text=text.get_content() if text is not None else None,
    )


@bp.route('/<key>/html')
def message_html(key):
    """The HTML part alone, for the sandboxed frame of the message page."""
    html = message_or_404(key).get_body(preferencelist=('html',))
    if html is None:
        abort(404)
    content = html.get_content()
    base = '<base target="_top">'
    match = HEAD.search(content)
    content = content[: match.end()] + base + content[match.end() :] if match else base + content
    response = current_app.response_class(content, mimetype='text/html')
    response.headers['Content-Security-Policy'] = EMAIL_CSP
    response.headers['X-Frame-Options'] = 'SAMEORIGIN'
    return response


@bp.route('/<key>/raw')
def message_raw(key):
    """The message as it arrived, to save or to read in any mail reader."""
    inbox = the_inbox()
    if inbox is None:
        abort(404)
    try:
        raw = inbox.get_bytes(key)
    except KeyError:
        abort(404)
    return current_app.response_class(raw, mimetype='text/plain')
