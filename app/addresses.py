"""Email addresses, one way everywhere: normalised once, matched by a key, sent in ASCII.

Plain functions with no state, used by the models, the forms and the mail package.

- ``deliverable_address`` is what registration stores: email-validator's normal form of
  an address this app can really deliver to, or a message saying why not.
- ``lookup_key`` is what accounts are matched by: the IDNA 2008 ASCII form of the
  domain and a case-folded local part, computed in Python so that it folds non-ASCII
  letters the same on SQLite and PostgreSQL.
- ``smtp_address`` is what SMTP gets: the local part and the IDNA 2008 ASCII domain.
  Flask-Mail would encode a non-ASCII domain with Python's ``idna`` codec (IDNA 2003,
  which maps ß to ss and ς to σ: another domain), so it never sees one.
"""

import email.policy
from email.headerregistry import HeaderRegistry
from email.utils import formataddr, parseaddr

from email_validator import EmailNotValidError, validate_email
from flask_babel import get_locale, gettext
from flask_babel import lazy_gettext as _l

_parse_header = HeaderRegistry()


def N_(text):  # noqa: N802 - gettext's name for a string marked to translate elsewhere
    """``text`` itself, marked for the catalogue: it is translated where it is shown."""
    return text


class UndeliverableAddressError(ValueError):
    """An address this app cannot send email to; the message says why, in English (logs).

    ``describe_problem`` says it to the person, in their language: by its ``problem``
    (a key of ``_PROBLEMS``), or, for email-validator's own refusals (``None``), by
    translating its message where it can.
    """

    def __init__(self, message, problem=None):
        super().__init__(message)
        self.problem = problem


def describe_problem(exc):
    """What is wrong with the address, for the person who typed it, in their language.

    email-validator's own messages are English: the common ones are translated here,
    and in another language any other says only that the address is not valid.
    """
    if exc.problem in _PROBLEMS:
        return gettext(_PROBLEMS[exc.problem])
    known = _VALIDATOR_MESSAGES.get(str(exc))
    if known is not None:
        return str(known)
    locale = get_locale()
    if locale is None or locale.language == 'en':
        return str(exc)
    return gettext('This is not a valid email address.')


# The problems this module finds itself, in English (the exception's message, which logs
# and `flask mail status` show), translated by ``describe_problem``.
_PROBLEMS = {
    'encoded_word': N_(
        'The part before the @-sign reads as an encoded header word, so mail programs '
        'would show another address.'
    ),
    'smtputf8': N_(
        'We cannot send email to an address with letters outside A to Z before the '
        '@-sign. Please use another address.'
    ),
}
# email-validator's messages for the mistakes people make most, translated.
_VALIDATOR_MESSAGES = {
    'An email address must have an @-sign.': _l('An email address must have an @-sign.'),
    'There must be something before the @-sign.': _l('There must be something before the @-sign.'),
    'There must be something after the @-sign.': _l('There must be something after the @-sign.'),
    'The part after the @-sign is not valid. It should have a period.': _l(
        'The part after the @-sign is not valid. It should have a period.'
    ),
    'The email address contains invalid characters before the @-sign: SPACE.': _l(
        'The email address contains a space before the @-sign.'
    ),
    'An email address cannot have two periods in a row.': _l(
        'An email address cannot have two periods in a row.'
    ),
}


def _validated(address, smtputf8=True):
    return validate_email(address.strip(), check_deliverability=False, allow_smtputf8=smtputf8)


def normalize_address(address):
    """email-validator's normal form of ``address`` (domain lower-cased, Unicode NFC).

    An address that is not valid comes back stripped, so that it can still be
    compared; forms refuse it before it is stored.
    """
    try:
        return _validated(address).normalized
    except EmailNotValidError:
        return address.strip()


def lookup_key(address):
    """The key an account is found by: matches the same mailbox however it was typed.

    None for a string that is not an email address at all.
    """
    try:
        valid = _validated(address)
    except EmailNotValidError:
        return None
    return f'{valid.local_part.casefold()}@{valid.ascii_domain.lower()}'


def smtp_address(address):
    """The form of ``address`` to hand to SMTP: ASCII only, with the IDNA 2008 domain."""
    try:
        valid = _validated(address, smtputf8=False)
    except EmailNotValidError as exc:
        raise UndeliverableAddressError(str(exc)) from None
    # email-validator has refused an address longer than SMTP takes (RFC 5321: 254
    # characters, a path being 256 octets with its angle brackets), counted in this form.
    ascii_address = valid.ascii_email
    if '=?' in valid.local_part or not _survives_headers(ascii_address):
        raise UndeliverableAddressError(_PROBLEMS['encoded_word'], 'encoded_word')
    return ascii_address


def smtp_sender(sender):
    """A sender such as ``Microblog <no-reply@straße.de>`` with its address in SMTP's ASCII form."""
    name, address = parseaddr(sender)
    # Without a name, formataddr gives the bare address.
    return formataddr((name, smtp_address(address)))


def _survives_headers(ascii_address):
    """Whether the address reads back as itself from a To header, as a mail program parses it.

    A local part such as ``=?utf-8?b?...?=`` is valid ASCII, but header parsers
    decode it as an RFC 2047 encoded word: into another address, or CR and LF.
    """
    if parseaddr(ascii_address)[1] != ascii_address:
        return False
    try:
        header = _parse_header('To', ascii_address)
        addresses = header.addresses
        # Folding a long header breaks its line, which is allowed; it raises on what is not.
        header.fold(policy=email.policy.SMTP)
    except (ValueError, IndexError, TypeError):
        return False
    return len(addresses) == 1 and addresses[0].addr_spec == ascii_address


def deliverable_address(address):
    """The form of ``address`` to store; UndeliverableAddressError if mail cannot reach it."""
    try:
        valid = _validated(address)
    except EmailNotValidError as exc:
        raise UndeliverableAddressError(str(exc)) from None
    if valid.smtputf8:
        raise UndeliverableAddressError(_PROBLEMS['smtputf8'], 'smtputf8')
    smtp_address(valid.normalized)
    return valid.normalized
