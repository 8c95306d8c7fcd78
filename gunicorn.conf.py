"""gunicorn reads this file from the folder it starts in: `gunicorn microblog:app`."""


def on_starting(server):
    """Check the settings in the master, before any worker starts.

    A setting the app refuses stops gunicorn here with the app's one-line message
    (ConfigError is a SystemExit), instead of every worker failing with a traceback
    and being started again.
    """
    from flask.helpers import get_debug_flag

    import config  # reads .env; a setting that cannot be read stops here

    config.check_settings(config.settings_of(config.Config), debug=get_debug_flag())


def post_worker_init(worker):
    """Start each worker's email delivery thread with the worker, not on its first request.

    Whatever an earlier process left pending then goes out even if no page is asked for.
    """
    from app import start_serving

    start_serving(worker.wsgi)


def when_ready(server):
    """Warn once, as gunicorn starts, when its workers would each count rate limits apart."""
    from config import Config, limit_storage_warning

    warning = limit_storage_warning(Config, server.cfg.workers)
    if warning:
        server.log.warning(warning)
