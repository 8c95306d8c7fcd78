"""Signed links with one purpose each: confirm an address, confirm a new one, undo a change.

Every token names its purpose, and reading one asks for that purpose: a link of one
kind is never taken for another. (Reset links carry a claim of their own, which
none of these has, and these carry a purpose, which a reset token has not.) What a
token may do is decided by what it points at, as it is now: see app.auth.account.
"""

import jwt
from flask import current_app

from app.models import decode_signed, utcnow

CONFIRM_EMAIL = 'confirm_email'  # the account's own address, after registering
CONFIRM_NEW_EMAIL = 'confirm_new_email'  # the new address of a change
UNDO_EMAIL_CHANGE = 'undo_email_change'  # from the old address: cancel or undo a change
PURPOSES = (CONFIRM_EMAIL, CONFIRM_NEW_EMAIL, UNDO_EMAIL_CHANGE)


def make_link_token(purpose, expires_at, **claims):
    """A token for ``purpose`` carrying ``claims``, valid until ``expires_at``."""
    if purpose not in PURPOSES:
        raise ValueError(f'no such purpose: {purpose!r}')
    payload = {'purpose': purpose, **claims, 'iat': utcnow(), 'exp': expires_at}
    return jwt.encode(payload, current_app.config['SECRET_KEY'], algorithm='HS256')


def read_link_token(purpose, token, *claims):
    """The claims of a valid, unexpired token made for ``purpose``, or None.

    Every name in ``claims`` must be present; an integer claim (an id) must be a
    true integer, not a string or a boolean that compares equal to one.
    """
    payload = decode_signed(token, require=['exp', 'iat', 'purpose', *claims])
    if payload is None or payload['purpose'] != purpose:
        return None
    for name in claims:
        value = payload[name]
        if name.endswith('_id') and (not isinstance(value, int) or isinstance(value, bool)):
            return None
        if not name.endswith('_id') and not isinstance(value, str):
            return None
    return payload
