"""The Microblog application factory."""

import logging
import os
import queue
from datetime import timedelta
from logging.handlers import QueueHandler, QueueListener, RotatingFileHandler, SMTPHandler

import sqlalchemy as sa
from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_mail import Mail
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from app.addresses import UndeliverableAddressError, smtp_sender
from config import DEV_SECRET_KEY, Config

db = SQLAlchemy()
migrate = Migrate()
login = LoginManager()
login.login_view = 'auth.login'
login.login_message = 'Please log in to access this page.'
mailer = Mail()  # Flask-Mail: the MAIL_* settings, the SMTP connection, record_messages
csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address)


def create_app(config_class=Config):
    """Build and configure an application instance."""
    app = Flask(__name__)
    app.config.from_object(config_class)
    check_config(app)

    if app.config['PROXY_COUNT']:
        count = app.config['PROXY_COUNT']
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count)

    db.init_app(app)
    with app.app_context():
        if db.engine.dialect.name == 'sqlite':
            sa.event.listen(db.engine, 'connect', _tune_sqlite)
    migrate.init_app(app, db)
    login.init_app(app)
    mailer.init_app(app)
    csrf.init_app(app)
    limiter.init_app(app)

    from app.mail import delivery

    delivery.init_app(app)

    from app.errors import bp as errors_bp

    app.register_blueprint(errors_bp)

    from app.auth import bp as auth_bp
    from app.auth.sessions import RotatingSessionInterface

    app.session_interface = RotatingSessionInterface()

    app.register_blueprint(auth_bp)

    from app.main import bp as main_bp

    app.register_blueprint(main_bp)

    from app.cli import register_commands

    register_commands(app)

    from app.security import init_security

    init_security(app)

    if not app.debug and not app.testing:
        configure_production_logging(app)

    return app


def check_config(app):
    """Refuse to start with settings that would be unsafe or confusing later."""
    config = app.config
    relaxed = app.debug or app.testing
    if config['MAIL_USE_TLS'] and config['MAIL_USE_SSL']:
        raise RuntimeError(
            'MAIL_USE_TLS and MAIL_USE_SSL are both on. Use one: MAIL_USE_TLS=true with '
            'port 587 (STARTTLS), or MAIL_USE_SSL=true with port 465 (TLS from the start).'
        )
    if config['MAIL_QUEUE'] not in ('thread', 'rq', 'none'):
        raise RuntimeError(f'MAIL_QUEUE={config["MAIL_QUEUE"]!r}: use thread, rq or none.')
    if config['MAIL_DEFAULT_SENDER'] is None:
        config['MAIL_DEFAULT_SENDER'] = config['ADMINS'][0]
    try:
        smtp_sender(config['MAIL_DEFAULT_SENDER'])
    except UndeliverableAddressError as exc:
        raise RuntimeError(
            f'MAIL_DEFAULT_SENDER={config["MAIL_DEFAULT_SENDER"]!r} cannot be used as the sender '
            f'of email: {exc} Set it (or the first of ADMINS) to an address such as '
            'no-reply@example.com.'
        ) from None
    if not config['PREFERRED_URL_SCHEME']:
        config['PREFERRED_URL_SCHEME'] = 'http' if app.debug else 'https'
    if config['SESSION_COOKIE_SECURE'] is None:
        config['SESSION_COOKIE_SECURE'] = not app.debug
    # A remembered session's cookie lives as long as its row on the server.
    config['PERMANENT_SESSION_LIFETIME'] = timedelta(seconds=config['REMEMBER_ME_LIFETIME'])
    if relaxed:
        if not config['SERVER_NAME']:
            config['SERVER_NAME'] = '127.0.0.1:5000'
        return
    if config['SECRET_KEY'] == DEV_SECRET_KEY or not config['SECRET_KEY']:
        raise RuntimeError(
            'SECRET_KEY is not set. Set it to a long random value, for example '
            'SECRET_KEY=$(python -c "import secrets; print(secrets.token_hex(32))") '
            'in the environment or in .env.'
        )
    if not config['SERVER_NAME']:
        raise RuntimeError(
            'SERVER_NAME is not set. Set it to the public host name of the site '
            '(for example SERVER_NAME=microblog.example.com): links in emails are '
            'built from it, never from the Host header of a request.'
        )


def _tune_sqlite(dbapi_connection, connection_record):
    """Let readers and the delivery worker write without waiting for each other."""
    cursor = dbapi_connection.cursor()
    cursor.execute('PRAGMA journal_mode=WAL')
    cursor.execute('PRAGMA busy_timeout=15000')
    cursor.close()


def configure_production_logging(app):
    """Log to a rotating file (or stdout) and email errors to the admins."""
    if app.config['MAIL_SERVER']:
        auth = None
        if app.config['MAIL_USERNAME'] or app.config['MAIL_PASSWORD']:
            auth = (app.config['MAIL_USERNAME'], app.config['MAIL_PASSWORD'])
        secure = () if app.config['MAIL_USE_TLS'] else None
        mail_handler = SMTPHandler(
            mailhost=(app.config['MAIL_SERVER'], app.config['MAIL_PORT']),
            fromaddr=app.config['MAIL_DEFAULT_SENDER'],
            toaddrs=app.config['ADMINS'],
            subject='Microblog Failure',
            credentials=auth,
            secure=secure,
            timeout=app.config['MAIL_TIMEOUT'],
        )
        mail_handler.setLevel(logging.ERROR)
        # The SMTP conversation happens on the listener's thread, so a slow mail
        # server never holds up the request that logged the error.
        records = queue.SimpleQueue()
        listener = QueueListener(records, mail_handler, respect_handler_level=True)
        listener.start()
        app.extensions['error_mail_listener'] = listener
        queue_handler = QueueHandler(records)
        queue_handler.setLevel(logging.ERROR)
        app.logger.addHandler(queue_handler)

    if app.config['LOG_TO_STDOUT']:
        stream_handler = logging.StreamHandler()
        stream_handler.setLevel(logging.INFO)
        app.logger.addHandler(stream_handler)
    else:
        os.makedirs('logs', exist_ok=True)
        file_handler = RotatingFileHandler('logs/microblog.log', maxBytes=10240, backupCount=10)
        file_handler.setFormatter(
            logging.Formatter('%(asctime)s %(levelname)s: %(message)s [in %(pathname)s:%(lineno)d]')
        )
        file_handler.setLevel(logging.INFO)
        app.logger.addHandler(file_handler)

    app.logger.setLevel(logging.INFO)
    app.logger.info('Microblog startup')


from app import models  # noqa: E402,F401
