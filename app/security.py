"""Security headers, password rules and the constant-cost login check."""

from functools import lru_cache

from flask import abort, current_app, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from werkzeug.security import check_password_hash, generate_password_hash
from wtforms.validators import ValidationError
from zxcvbn import zxcvbn

from app.avatars import image_sources
from app.i18n import join_sentences

PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 128
# zxcvbn refuses more than 72 characters (and its cost grows with the length);
# the first 72 tell enough about how guessable a password is.
STRENGTH_CHECK_LENGTH = 72
MIN_STRENGTH_SCORE = 2

CONTENT_SECURITY_POLICY = '; '.join(
    [
        "default-src 'self'",
        'img-src {image_sources}',  # see content_security_policy
        "style-src 'self'",
        "script-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

# Files that are the same for everyone and say so in their own Cache-Control.
PUBLIC_FILES = {'static', 'main.avatar'}

# Pages that show or take a reset token: nothing about them may be cached.
NO_STORE_ENDPOINTS = {
    'auth.reset_password',
    'auth.reset_password_form',
    'auth.reset_password_request',
}


def content_security_policy(config):
    """The policy of every page: images from the site itself, and Gravatar only if asked for."""
    return CONTENT_SECURITY_POLICY.format(image_sources=' '.join(image_sources(config)))


def init_security(app):
    """Refuse NUL characters, and send the security headers on every response."""
    policy = content_security_policy(app.config)

    @app.before_request
    def refuse_nul_characters():
        # No field takes one, and PostgreSQL cannot even compare text with one.
        values = [*(request.view_args or {}).values(), *request.args.values()]
        if request.method in ('POST', 'PUT', 'PATCH'):
            values += [value for _, items in request.form.lists() for value in items]
        if any('\x00' in str(value) for value in values):
            abort(
                400,
                description=_('The request contains a NUL character, which no field accepts.'),
            )

    @app.after_request
    def set_security_headers(response):
        headers = response.headers
        headers.setdefault('X-Content-Type-Options', 'nosniff')
        headers.setdefault('X-Frame-Options', 'DENY')
        headers.setdefault('Content-Security-Policy', policy)
        # same-origin, not no-referrer: Flask-WTF checks the Referer on HTTPS.
        headers.setdefault('Referrer-Policy', 'same-origin')
        headers.setdefault('Cross-Origin-Opener-Policy', 'same-origin')
        if request.endpoint in NO_STORE_ENDPOINTS:
            headers['Cache-Control'] = 'no-store'
            headers['Pragma'] = 'no-cache'
        elif request.endpoint not in PUBLIC_FILES and current_user.is_authenticated:
            # A signed-in page is this user's alone: no shared cache keeps it, no
            # back button shows it after logout.
            headers['Cache-Control'] = 'private, no-store'
        return response


def password_problems(password, username=None, email=None, old_password_hash=None):
    """Every reason the password is not acceptable, as messages for the person typing it."""
    if len(password) < PASSWORD_MIN_LENGTH:
        return [_('Use at least %(count)d characters.', count=PASSWORD_MIN_LENGTH)]
    if len(password) > PASSWORD_MAX_LENGTH:
        return [_('Use at most %(count)d characters.', count=PASSWORD_MAX_LENGTH)]
    folded = password.casefold()
    personal = [value for value in (username, email) if value]
    if email and '@' in email:
        personal.append(email.split('@', 1)[0])
    for value in personal:
        if len(value) >= 3 and folded == value.casefold():
            return [_('Your password cannot be your username or email address.')]
    if old_password_hash and check_password_hash(old_password_hash, password):
        return [_('Choose a password you have not used for this account.')]
    result = zxcvbn(password[:STRENGTH_CHECK_LENGTH], user_inputs=personal)
    if result['score'] < MIN_STRENGTH_SCORE:
        feedback = result['feedback']
        warning = translate_feedback(feedback.get('warning')) or _(
            'This password is too easy to guess.'
        )
        hints = [translate_feedback(text) for text in feedback.get('suggestions') or []]
        return [join_sentences(warning, *hints)]
    return []


# zxcvbn's feedback is English only: each of its messages, to show in the reader's
# language. tests/test_i18n.py checks that this names every message zxcvbn can give.
ZXCVBN_FEEDBACK = {
    'Use a few words, avoid common phrases.': _l('Use a few words, avoid common phrases.'),
    'No need for symbols, digits, or uppercase letters.': _l(
        'No need for symbols, digits, or uppercase letters.'
    ),
    'Add another word or two. Uncommon words are better.': _l(
        'Add another word or two. Uncommon words are better.'
    ),
    'Straight rows of keys are easy to guess.': _l('Straight rows of keys are easy to guess.'),
    'Short keyboard patterns are easy to guess.': _l('Short keyboard patterns are easy to guess.'),
    'Use a longer keyboard pattern with more turns.': _l(
        'Use a longer keyboard pattern with more turns.'
    ),
    'Repeats like "aaa" are easy to guess.': _l('Repeats like "aaa" are easy to guess.'),
    'Repeats like "abcabcabc" are only slightly harder to guess than "abc".': _l(
        'Repeats like "abcabcabc" are only slightly harder to guess than "abc".'
    ),
    'Avoid repeated words and characters.': _l('Avoid repeated words and characters.'),
    'Sequences like "abc" or "6543" are easy to guess.': _l(
        'Sequences like "abc" or "6543" are easy to guess.'
    ),
    'Avoid sequences.': _l('Avoid sequences.'),
    'Recent years are easy to guess.': _l('Recent years are easy to guess.'),
    'Avoid recent years.': _l('Avoid recent years.'),
    'Avoid years that are associated with you.': _l('Avoid years that are associated with you.'),
    'Dates are often easy to guess.': _l('Dates are often easy to guess.'),
    'Avoid dates and years that are associated with you.': _l(
        'Avoid dates and years that are associated with you.'
    ),
    'This is a top-10 common password.': _l('This is a top-10 common password.'),
    'This is a top-100 common password.': _l('This is a top-100 common password.'),
    'This is a very common password.': _l('This is a very common password.'),
    'This is similar to a commonly used password.': _l(
        'This is similar to a commonly used password.'
    ),
    'A word by itself is easy to guess.': _l('A word by itself is easy to guess.'),
    'Names and surnames by themselves are easy to guess.': _l(
        'Names and surnames by themselves are easy to guess.'
    ),
    'Common names and surnames are easy to guess.': _l(
        'Common names and surnames are easy to guess.'
    ),
    "Capitalization doesn't help very much.": _l("Capitalization doesn't help very much."),
    'All-uppercase is almost as easy to guess as all-lowercase.': _l(
        'All-uppercase is almost as easy to guess as all-lowercase.'
    ),
    "Reversed words aren't much harder to guess.": _l(
        "Reversed words aren't much harder to guess."
    ),
    "Predictable substitutions like '@' instead of 'a' don't help very much.": _l(
        "Predictable substitutions like '@' instead of 'a' don't help very much."
    ),
}


def translate_feedback(text):
    """One of zxcvbn's messages in the reader's language; None for none, or one it never gave."""
    translated = ZXCVBN_FEEDBACK.get(text) if text else None
    return str(translated) if translated is not None else None


class StrongPassword:
    """Form validator that applies the password rules (same on register and reset)."""

    def __init__(self, username_field=None, email_field=None):
        self.username_field = username_field
        self.email_field = email_field

    def __call__(self, form, field):
        username = form[self.username_field].data if self.username_field else None
        email = form[self.email_field].data if self.email_field else None
        username = username or getattr(form, 'account_username', None)
        email = email or getattr(form, 'account_email', None)
        old_hash = getattr(form, 'account_password_hash', None)
        problems = password_problems(field.data or '', username, email, old_hash)
        if problems:
            raise ValidationError(problems[0])


@lru_cache(maxsize=4)
def _dummy_hash(method):
    return generate_password_hash('not-a-real-password-only-for-timing', method=method)


def check_login(user, password):
    """Check a password, spending the same time whether or not the account exists."""
    if user is None or not user.password_hash:
        check_password_hash(_dummy_hash(current_app.config['PASSWORD_HASH_METHOD']), password)
        return False
    return user.check_password(password)
