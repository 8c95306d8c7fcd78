import math
import time

from flask import current_app, make_response, render_template, request
from flask.globals import request_ctx
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from app import db, limiter
from app.errors import bp


@bp.app_errorhandler(404)
def not_found_error(error):
    return render_template('errors/404.html', title='Not Found'), 404


@bp.app_errorhandler(429)
def too_many_requests_error(error):
    """Say how long to wait, on the page and in Retry-After."""
    seconds = seconds_until_reset()
    wait = describe_wait(seconds) if seconds else None
    page = render_template('errors/429.html', title='Too Many Requests', wait=wait)
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
        count, unit = seconds, 'second'
    elif math.ceil(seconds / 60) < 60:
        count, unit = math.ceil(seconds / 60), 'minute'
    else:
        # An hour's window read a second later is still "1 hour", not "2 hours".
        count, unit = max(1, math.floor(seconds / 3600 + 0.5)), 'hour'
    return f'{count} {unit}' + ('' if count == 1 else 's')


@bp.app_errorhandler(500)
def internal_error(error):
    db.session.rollback()
    return render_template('errors/500.html', title='Unexpected Error'), 500


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
        title=error.name,
        error=error,
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
