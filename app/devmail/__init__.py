"""The development inbox: the emails the local mail sink keeps, at /_mail, in debug mode only."""

from flask import Blueprint

bp = Blueprint('devmail', __name__, url_prefix='/_mail')

from app.devmail import routes  # noqa: E402,F401
