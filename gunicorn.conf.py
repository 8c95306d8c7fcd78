"""gunicorn reads this file from the folder it starts in: `gunicorn microblog:app`."""


def post_worker_init(worker):
    """Start each worker's email delivery thread with the worker, not on its first request.

    Whatever an earlier process left pending then goes out even if no page is asked for.
    """
    worker.wsgi.extensions['mail_delivery'].start()


def when_ready(server):
    """Warn once, as gunicorn starts, when its workers would each count rate limits apart."""
    from config import Config, limit_storage_warning

    warning = limit_storage_warning(Config, server.cfg.workers)
    if warning:
        server.log.warning(warning)
