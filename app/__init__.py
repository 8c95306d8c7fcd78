"""The Microblog application factory."""

import os
import threading
from datetime import timedelta

import click
import sqlalchemy as sa
from flask import Flask
from flask.cli import run_command
from flask.helpers import get_debug_flag
from flask_babel import Babel
from flask_babel import lazy_gettext as _l
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_mail import Mail
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.serving import is_running_from_reloader

from app.addresses import UndeliverableAddressError, smtp_sender
from config import Config, ConfigError, check_settings

db = SQLAlchemy()
migrate = Migrate()
login = LoginManager()
login.login_view = 'auth.login'
login.login_message = _l('Please log in to access this page.')
login.login_message_category = 'info'
login.localize_callback = str  # the lazy message, in the language of the request
mailer = Mail()  # Flask-Mail: the MAIL_* settings, the SMTP connection, record_messages
csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address)
babel = Babel()


def create_app(config_class=Config):
    """Build and configure an application instance."""
    app = Flask(__name__)
    app.config.from_object(config_class)
    # Defaults that depend on debug mode, and a one-line refusal of unsafe settings.
    check_settings(app.config, debug=app.debug)
    try:
        smtp_sender(app.config['MAIL_DEFAULT_SENDER'])
    except UndeliverableAddressError as exc:
        raise ConfigError(
            f'MAIL_DEFAULT_SENDER={app.config["MAIL_DEFAULT_SENDER"]!r} cannot be used as the '
            f'sender of email: {exc} Set it (or the first of ADMINS) to an address such as '
            'no-reply@example.com.'
        ) from None
    # A remembered session's cookie lives as long as its row on the server.
    app.config['PERMANENT_SESSION_LIFETIME'] = timedelta(seconds=app.config['REMEMBER_ME_LIFETIME'])

    if app.config['PROXY_COUNT']:
        count = app.config['PROXY_COUNT']
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count)

    db.init_app(app)
    from app import transactions

    transactions.init_app(app, db)
    with app.app_context():
        if db.engine.dialect.name == 'sqlite':
            sa.event.listen(db.engine, 'connect', _tune_sqlite)
    migrate.init_app(app, db)
    login.init_app(app)
    mailer.init_app(app)
    csrf.init_app(app)
    limiter.init_app(app)

    from app import i18n

    i18n.init_app(app, babel)

    from app.mail import delivery

    delivery.init_app(app)
    # Servers with no start hook (gunicorn has one: gunicorn.conf.py) start serving
    # on their first request; `flask run` at once. Other commands never do.
    app.before_request(lambda: start_serving(app))
    if _serving_with_flask_run():
        start_serving(app)

    from app.errors import bp as errors_bp

    app.register_blueprint(errors_bp)

    from app.auth import bp as auth_bp
    from app.auth.sessions import RotatingSessionInterface

    app.session_interface = RotatingSessionInterface()
    app.register_blueprint(auth_bp)

    from app.main import bp as main_bp
    from app.main import cards

    app.register_blueprint(main_bp)
    cards.init_app(app)

    if app.debug:
        # The inbox of the local mail sink: never present outside debug mode.
        from app.devmail import bp as devmail_bp

        app.register_blueprint(devmail_bp)

    from app.cli import register_commands

    register_commands(app)

    from app.security import init_security

    init_security(app)

    if not app.debug and not app.testing:
        from app.logs import configure_production_logging

        configure_production_logging(app)

    return app


_serving_lock = threading.Lock()


def start_serving(app):
    """Once per process that serves pages: log the start-up and start the delivery worker."""
    state = app.extensions.setdefault('serving', {})
    if state.get('pid') != os.getpid():
        with _serving_lock:
            if state.get('pid') != os.getpid():
                state['pid'] = os.getpid()
                app.logger.info(
                    'Microblog startup (process %d, mail delivery: %s)',
                    os.getpid(),
                    app.config['MAIL_QUEUE'],
                )
    app.extensions['mail_delivery'].start()


def _serving_with_flask_run():
    """Whether this process serves pages for `flask run` (not another command, nor its reloader).

    With the reloader (debug mode), `flask run` serves from a child process and the
    first one only watches the files.
    """
    context = click.get_current_context(silent=True)
    # Flask's own command, not any command named "run" (mutmut's, say).
    if context is None or context.command is not run_command:
        return False
    reloads = context.params.get('reload')
    if reloads is None:
        reloads = get_debug_flag()
    return not reloads or is_running_from_reloader()


def _tune_sqlite(dbapi_connection, connection_record):
    """Let readers and the delivery worker write without waiting for each other."""
    cursor = dbapi_connection.cursor()
    cursor.execute('PRAGMA journal_mode=WAL')
    cursor.execute('PRAGMA busy_timeout=15000')
    cursor.close()


from app import models  # noqa: E402,F401
