"""The common form checks, with messages from this site's catalogue.

WTForms brings its own Chinese for "This field is required." and the length
messages, in words these pages do not use (字段, "data field"). The English of
these messages is WTForms' own, so English pages read as they always did; the
Chinese is the site's, from app/translations.
"""

from flask_babel import lazy_gettext as _l
from wtforms.validators import DataRequired, Length


def required():
    """DataRequired, saying so in the reader's words."""
    return DataRequired(message=_l('This field is required.'))


def at_most(length):
    """Length(max=length), saying so in the reader's words."""
    return Length(max=length, message=_l('Field cannot be longer than %(max)d characters.'))


def between(shortest, longest):
    """Length(min=shortest, max=longest), saying so in the reader's words."""
    return Length(
        min=shortest,
        max=longest,
        message=_l('Field must be between %(min)d and %(max)d characters long.'),
    )
