import hashlib
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from limits import parse_many
from limits.errors import StorageError
from werkzeug.security import generate_password_hash

from app import db, limiter
from app.addresses import lookup_key, normalize_address
from app.auth import bp
from app.auth.email import queue_password_changed_email, queue_password_reset_email
from app.auth.forms import (
    LoginForm,
    LogoutForm,
    RegistrationForm,
    ResetPasswordForm,
    ResetPasswordRequestForm,
)
from app.models import User
from app.security import check_login

INVALID_LINK = 'This reset link is invalid or has expired.'


def is_safe_next(target):
    """Whether ``next`` is a path on this site, not a way off it."""
    if not target or not target.startswith('/') or target.startswith('//'):
        return False
    if '\\' in target or any(ord(char) < 32 for char in target):
        return False
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc


def login_username_key():
    """Rate-limit key for login attempts against one username."""
    username = request.form.get('username', '').strip().lower()[:64]
    return 'login-username:' + hashlib.sha256(username.encode()).hexdigest()


def login_failed(response):
    """Only failed attempts count against a username: a success redirects."""
    return response.status_code != 302


@bp.route('/login', methods=['GET', 'POST'])
@limiter.limit(lambda: current_app.config['RATELIMIT_LOGIN_PER_ADDRESS'], methods=['POST'])
@limiter.limit(
    lambda: current_app.config['RATELIMIT_LOGIN_PER_USERNAME'],
    key_func=login_username_key,
    methods=['POST'],
    deduct_when=login_failed,
)
def login():
    if current_user.is_authenticated:
        return redirect(url_for('main.index'))
    form = LoginForm()
    if form.validate_on_submit():
        user = db.session.scalar(
            sa.select(User).where(
                sa.func.lower(User.username) == form.username.data.strip().lower()
            )
        )
        if check_login(user, form.password.data):
            login_user(user, remember=form.remember_me.data)
            next_page = request.args.get('next')
            if not is_safe_next(next_page):
                next_page = url_for('main.index')
            return redirect(next_page)
        flash('Invalid username or password', 'error')
    return render_template('auth/login.html', title='Sign In', form=form)


@bp.route('/logout', methods=['GET', 'POST'])
def logout():
    form = LogoutForm()
    if request.method == 'POST':
        if form.validate_on_submit():
            logout_user()
            flash('You have been logged out.', 'info')
            # Straight to the login page: the index would ask to log in, a second message.
            return redirect(url_for('auth.login'))
        return redirect(url_for('main.index'))
    if not current_user.is_authenticated:
        return redirect(url_for('main.index'))
    return render_template('auth/logout.html', title='Log out', form=form)


@bp.route('/register', methods=['GET', 'POST'])
@limiter.limit(lambda: current_app.config['RATELIMIT_REGISTER_PER_ADDRESS'], methods=['POST'])
def register():
    if current_user.is_authenticated:
        return redirect(url_for('main.index'))
    form = RegistrationForm()
    if form.validate_on_submit():
        user = User(username=form.username.data.strip(), email=form.email.data)
        user.set_password(form.password.data)
        db.session.add(user)
        db.session.commit()
        flash('Congratulations, you are now a registered user!', 'success')
        return redirect(url_for('auth.login'))
    return render_template('auth/register.html', title='Register', form=form)


def reset_allowed_for(address):
    """The silent per-address limit on reset emails: past it, nothing is sent and nothing said."""
    if not limiter.enabled:
        return True
    key = hashlib.sha256((lookup_key(address) or address).encode()).hexdigest()
    limits = parse_many(current_app.config['RATELIMIT_RESET_PER_EMAIL'])
    try:
        # limiter.limiter is Flask-Limiter's in-memory fallback while its storage is down.
        return all([limiter.limiter.hit(item, 'reset-email', key) for item in limits])
    except StorageError as exc:
        # Redis went away between this page's own limit check and here: the next
        # request falls back; this one is let through rather than answered with a 500.
        current_app.logger.warning('Per-email reset limit not counted: %s', exc)
        return True


@bp.route('/reset_password_request', methods=['GET', 'POST'])
@limiter.limit(lambda: current_app.config['RATELIMIT_RESET_PER_ADDRESS'], methods=['POST'])
def reset_password_request():
    if current_user.is_authenticated:
        return redirect(url_for('main.index'))
    form = ResetPasswordRequestForm()
    if form.validate_on_submit():
        address = normalize_address(form.email.data)
        # Known or not, the request costs the same here: it is stored as typed, and
        # the delivery worker looks the account up on its own cadence.
        if reset_allowed_for(address):
            queue_password_reset_email(address)
            db.session.commit()
        flash('Check your email for the instructions to reset your password', 'info')
        return redirect(url_for('auth.login'))
    return render_template('auth/reset_password_request.html', title='Reset Password', form=form)


@bp.route('/reset_password/<token>', methods=['GET'])
def reset_password(token):
    """Check the link, then move its token into the session and off the URL."""
    if current_user.is_authenticated:
        return redirect(url_for('main.index'))
    if User.verify_reset_password_token(token) is None:
        session.pop('reset_token', None)
        flash(INVALID_LINK, 'error')
        return redirect(url_for('auth.reset_password_request'))
    session['reset_token'] = token
    return redirect(url_for('auth.reset_password_form'))


@bp.route('/reset_password', methods=['GET', 'POST'])
def reset_password_form():
    if current_user.is_authenticated:
        return redirect(url_for('main.index'))
    token = session.get('reset_token')
    user = User.verify_reset_password_token(token) if token else None
    if user is None:
        session.pop('reset_token', None)
        flash(INVALID_LINK, 'error')
        return redirect(url_for('auth.reset_password_request'))
    form = ResetPasswordForm(user)
    if form.validate_on_submit():
        # Compare-and-set on the old hash: of two submissions of one link,
        # only the first changes the password.
        changed = db.session.execute(
            sa.update(User)
            .where(User.id == user.id, User.password_hash == user.password_hash)
            .values(password_hash=generate_password_hash(form.password.data))
            .execution_options(synchronize_session=False)
        ).rowcount
        session.pop('reset_token', None)
        if changed != 1:
            db.session.rollback()
            flash(INVALID_LINK, 'error')
            return redirect(url_for('auth.reset_password_request'))
        queue_password_changed_email(user)
        db.session.commit()  # the new password and the notice together
        flash('Your password has been reset.', 'success')
        return redirect(url_for('auth.login'))
    return render_template('auth/reset_password.html', title='Reset Password', form=form)
