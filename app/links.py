"""Links that a page builds many times over (an author's page, an avatar), from one
``url_for`` per request.

``url_for`` matches the whole URL map each time it is called: 25 posts with two links and
an avatar each made it a tenth of a page's time. The URL of a rule with one variable is
the same text around that variable, so it is built once per request with a placeholder,
and each link fills in its value, quoted as Werkzeug quotes a path segment. Whatever
``url_for`` adds (the script root, an external host, a default a ``url_defaults``
callback puts in the query string) is in that text too.
"""

from urllib.parse import quote

from flask import g, request, url_for

_PLACEHOLDER = 'x0microblog0link0value0x'
# What werkzeug.routing.BaseConverter.to_url leaves unquoted in a path segment.
_SEGMENT_SAFE = "!$&'()*+,/:;=@"


def _cache():
    # Kept in the request's WSGI environ (or, outside a request, on the app context): a
    # URL built for one request (its host, its script root) is never reused for another.
    try:
        return request._get_current_object().environ.setdefault('microblog.links', {})
    except RuntimeError:  # no request: an email, a command
        return g._get_current_object().__dict__.setdefault('_microblog_links', {})


def _parts(endpoint, name):
    cache = _cache()
    parts = cache.get((endpoint, name))
    if parts is None:
        head, found, tail = url_for(endpoint, **{name: _PLACEHOLDER}).partition(_PLACEHOLDER)
        if not found or _PLACEHOLDER in tail or '?' in head:
            raise ValueError(f'{endpoint} does not put {name} once in its path')
        parts = cache[(endpoint, name)] = (head, tail)
    return parts


def url_for_value(endpoint, name, value):
    """``url_for(endpoint, **{name: value})`` for a rule whose one variable is a string."""
    head, tail = _parts(endpoint, name)
    return head + quote(str(value), safe=_SEGMENT_SAFE) + tail


def user_url(username):
    """The URL of a user's page: ``url_for('main.user', username=username)``."""
    return url_for_value('main.user', 'username', username)
