from flask import render_template
from flask.globals import request_ctx
from werkzeug.exceptions import HTTPException

from app import db
from app.errors import bp


@bp.app_errorhandler(404)
def not_found_error(error):
    return render_template('errors/404.html', title='Not Found'), 404


@bp.app_errorhandler(429)
def too_many_requests_error(error):
    return render_template('errors/429.html', title='Too Many Requests'), 429


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
    response.data = render_template('errors/http.html', title=error.name, error=error)
    response.mimetype = 'text/html'
    return response
