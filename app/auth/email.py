from flask import current_app, render_template, url_for

from app.email import send_email, store_email


def public_url(endpoint, **values):
    """An absolute URL on the site's configured public address (never the request's Host)."""
    return url_for(
        endpoint, _external=True, _scheme=current_app.config['PREFERRED_URL_SCHEME'], **values
    )


def store_password_reset_email(user):
    """Add the reset email for ``user`` to the outbox, in the current transaction."""
    ttl = current_app.config['RESET_PASSWORD_TOKEN_TTL']
    token = user.get_reset_password_token(ttl)
    context = {
        'user': user,
        'reset_url': public_url('auth.reset_password', token=token),
        'valid_for': describe_duration(ttl),
    }
    return store_email(
        '[Microblog] Reset Your Password',
        current_app.config['MAIL_DEFAULT_SENDER'],
        [user.email],
        render_template('email/reset_password.txt', **context),
        render_template('email/reset_password.html', **context),
    )


def send_password_changed_email(user):
    """Tell the account's owner that its password was changed, and what to do if it was not them."""
    context = {'user': user, 'reset_request_url': public_url('auth.reset_password_request')}
    return send_email(
        '[Microblog] Your password was changed',
        current_app.config['MAIL_DEFAULT_SENDER'],
        [user.email],
        render_template('email/password_changed.txt', **context),
        render_template('email/password_changed.html', **context),
    )


def describe_duration(seconds):
    """A lifetime in words: "10 minutes", "1 hour", "90 seconds"."""
    if seconds % 3600 == 0:
        count, unit = seconds // 3600, 'hour'
    elif seconds % 60 == 0:
        count, unit = seconds // 60, 'minute'
    else:
        count, unit = seconds, 'second'
    return f'{count} {unit}' + ('' if count == 1 else 's')
