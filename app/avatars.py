"""Avatars: drawn by the app from a keyed hash of the account id, or Gravatar's on request.

By default (``AVATARS=local``) an account's picture and its URL come from
HMAC-SHA256(SECRET_KEY, 'avatar:<id>'): nobody without the key can compute them, nor
tie them to an email address, and pages load no image from anywhere else, so they work
offline and the Content Security Policy keeps ``img-src 'self'``. (A new SECRET_KEY
draws new pictures.)

``AVATARS=gravatar`` shows Gravatar's pictures instead. That publishes a hash of every
account's email address on every page (anyone can hash a list of addresses and match
them), so it is a choice an operator makes; the hash is Gravatar's SHA-256 form of the
trimmed, lower-cased address, never the unsalted MD5 of old.
"""

import hashlib
import hmac
import re
from functools import lru_cache

from flask import current_app

from app.links import url_for_value

AVATAR_CHOICES = ('local', 'gravatar')
GRAVATAR = 'https://www.gravatar.com'
DIGEST_PATTERN = re.compile(r'[0-9a-f]{32}')
GRID = 5  # cells a side; the left columns are mirrored to the right


def check_avatar_setting(config):
    """Refuse an AVATARS value the app does not know, with a message that lists the known ones."""
    if config['AVATARS'] not in AVATAR_CHOICES:
        raise RuntimeError(
            f'AVATARS={config["AVATARS"]!r}: use local (pictures drawn by the app, the '
            'default) or gravatar (pictures from www.gravatar.com).'
        )


def image_sources(config):
    """Where pages may load images from, for the Content Security Policy."""
    check_avatar_setting(config)
    return ["'self'", GRAVATAR] if config['AVATARS'] == 'gravatar' else ["'self'"]


def avatar_digest(user_id):
    """The keyed hash an account's local picture is drawn from (and named by)."""
    return _keyed_digest(current_app.config['SECRET_KEY'], user_id)


# A page shows up to 25 authors, and the same ones again and again: their hashes are
# kept rather than computed for every post of every page.
@lru_cache(maxsize=65536)
def _keyed_digest(secret_key, user_id):
    message = f'avatar:{user_id}'.encode()
    return hmac.new(secret_key.encode(), message, hashlib.sha256).hexdigest()[:32]


def gravatar_digest(email):
    """Gravatar's hash of an address: SHA-256 of the trimmed, lower-cased address."""
    return hashlib.sha256(email.strip().lower().encode('utf-8')).hexdigest()


def avatar_url(user, size):
    """The URL of the account's picture, shown ``size`` pixels wide."""
    config = current_app.config
    if config['AVATARS'] == 'gravatar':
        return f'{GRAVATAR}/avatar/{gravatar_digest(user.email)}?d=identicon&s={size}'
    # One URL whatever the size: the drawing is a vector, and one URL is cached once.
    return url_for_value('main.avatar', 'digest', _keyed_digest(config['SECRET_KEY'], user.id))


def avatar_svg(digest):
    """A symmetric pattern of squares in one colour, drawn from the 32 hex digits of ``digest``."""
    bits = int(digest, 16)
    hue = bits % 360
    bits >>= 16
    half = (GRID + 1) // 2
    cells = []
    for column in range(half):
        for row in range(GRID):
            if bits & 1:
                cells.append((column, row))
                if column != GRID - 1 - column:
                    cells.append((GRID - 1 - column, row))
            bits >>= 1
    if not cells:
        cells.append((GRID // 2, GRID // 2))
    squares = ''.join(f'M{x} {y}h1v1h-1z' for x, y in sorted(cells))
    # A margin of one cell keeps the pattern inside the round frame the stylesheet draws.
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="-1 -1 7 7" shape-rendering="crispEdges">'
        f'<rect x="-1" y="-1" width="7" height="7" fill="hsl({hue}, 35%, 92%)"/>'
        f'<path fill="hsl({hue}, 55%, 42%)" d="{squares}"/>'
        '</svg>'
    )
