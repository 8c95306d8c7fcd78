import math
import time

from flask import current_app, make_response, render_template, request
from flask.globals import request_ctx
from flask_babel import get_locale, ngettext
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from app import db, limiter
from app.errors import bp


@bp.app_errorhandler(404)
def not_found_error(error):
    return render_template('errors/404.html', title=_('Not Found')), 404


@bp.app_errorhandler(429)
def too_many_requests_error(error):
    """Say how long to wait, on the page and in Retry-After."""
    seconds = seconds_until_reset()
    wait = describe_wait(seconds) if seconds else None
    page = render_template('errors/429.html', title=_('Too Many Requests'), wait=wait)
    response = make_response(page)
    if seconds:
        response.headers['Retry-After'] = str(seconds)
    return response, 429


def seconds_until_reset():
    """Seconds until the limit that was hit lets this client try again, or None."""
    limit = limiter.current_limit
    if limit is None or not limit.breached:
        return None
    return max(1, math.ceil(limit.reset_at - time.time()))


def describe_wait(seconds):
    """A wait in words: "40 seconds", "1 minute", "12 minutes" (rounded up), "2 hours" (nearest)."""
    if seconds < 60:
        return ngettext('%(num)s second', '%(num)s seconds', seconds)
    if math.ceil(seconds / 60) < 60:
        return ngettext('%(num)s minute', '%(num)s minutes', math.ceil(seconds / 60))
    # An hour's window read a second later is still "1 hour", not "2 hours".
    return ngettext('%(num)s hour', '%(num)s hours', max(1, math.floor(seconds / 3600 + 0.5)))


@bp.app_errorhandler(500)
def internal_error(error):
    db.session.rollback()
    return render_template('errors/500.html', title=_('Unexpected Error')), 500


@bp.app_errorhandler(HTTPException)
def http_error(error):
    """Every other 4xx (bad request, missing CSRF token, too large...) gets a clean page."""
    if error.code is None or error.code < 400:
        return error
    if request_ctx.url_adapter is None:
        # A Host outside TRUSTED_HOSTS: no URL can be built, so no page with links.
        return error
    if error.code >= 500:
        db.session.rollback()
    response = error.get_response()
    response.data = render_template(
        'errors/http.html',
        title=error_name(error),
        error=error,
        name=error_name(error),
        description=error_description(error),
        secure_cookie_over_http=isinstance(error, CSRFError) and secure_cookie_over_http(),
    )
    response.mimetype = 'text/html'
    return response


def secure_cookie_over_http():
    """Whether the browser is on plain http:// while the session cookie is HTTPS-only.

    It then keeps the cookie to itself, and every form fails its CSRF check. The
    browser's Origin (or Referer) says which scheme it used, even behind a proxy.
    """
    if not current_app.config['SESSION_COOKIE_SECURE']:
        return False
    origin = request.headers.get('Origin') or request.headers.get('Referer')
    if origin:
        return origin.startswith('http://')
    return not request.is_secure


# The names of the status codes a page can answer with, in the reader's language.
HTTP_NAMES = {
    400: _l('Bad Request'),
    401: _l('Unauthorized'),
    403: _l('Forbidden'),
    404: _l('Not Found'),
    405: _l('Method Not Allowed'),
    406: _l('Not Acceptable'),
    408: _l('Request Timeout'),
    409: _l('Conflict'),
    410: _l('Gone'),
    411: _l('Length Required'),
    412: _l('Precondition Failed'),
    413: _l('Request Entity Too Large'),
    414: _l('Request URI Too Large'),
    415: _l('Unsupported Media Type'),
    416: _l('Requested Range Not Satisfiable'),
    417: _l('Expectation Failed'),
    422: _l('Unprocessable Entity'),
    428: _l('Precondition Required'),
    429: _l('Too Many Requests'),
    431: _l('Request Header Fields Too Large'),
    500: _l('Internal Server Error'),
    501: _l('Not Implemented'),
    502: _l('Bad Gateway'),
    503: _l('Service Unavailable'),
    504: _l('Gateway Timeout'),
}
# What Werkzeug and Flask-WTF say went wrong, by their English text.
HTTP_DESCRIPTIONS = {
    'The CSRF token is missing.': _l('The CSRF token is missing.'),
    'The CSRF session token is missing.': _l('The CSRF session token is missing.'),
    'The CSRF token has expired.': _l('The CSRF token has expired.'),
    'The CSRF token is invalid.': _l('The CSRF token is invalid.'),
    'The CSRF tokens do not match.': _l('The CSRF tokens do not match.'),
    'The referrer header is missing.': _l('The referrer header is missing.'),
    'The referrer is invalid.': _l('The referrer is invalid.'),
    'The referrer does not match the host.': _l('The referrer does not match the host.'),
}
# The description of each status code when the code raising it gave none of its own.
DEFAULT_DESCRIPTIONS = {
    400: _l('The browser (or proxy) sent a request that this server could not understand.'),
    403: _l(
        "You don't have the permission to access the requested resource. It is either "
        'read-protected or not readable by the server.'
    ),
    405: _l('The method is not allowed for the requested URL.'),
    413: _l('The data value transmitted exceeds the capacity limit.'),
}


def error_name(error):
    """The name of the error's status code, in the reader's language."""
    name = HTTP_NAMES.get(error.code)
    return str(name) if name is not None else error.name


def error_description(error):
    """What went wrong, in the reader's language.

    Werkzeug's own descriptions are English: the common ones are translated, and in
    another language any other is replaced by a sentence that is.
    """
    description = error.description
    if description in HTTP_DESCRIPTIONS:
        return str(HTTP_DESCRIPTIONS[description])
    if description == type(error).description or description is None:
        if error.code in DEFAULT_DESCRIPTIONS:
            return str(DEFAULT_DESCRIPTIONS[error.code])
        locale = get_locale()
        if locale is not None and locale.language != 'en':
            return _('Sorry, this request could not be answered.')
    return description
