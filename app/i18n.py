"""Languages: which one a page is shown in, the switch in the footer, and localised values.

A page is in the language its reader chose: the one saved on the account when signed
in, else the one chosen in this browser (kept in the session), else the first one the
browser asks for (``Accept-Language``) that Microblog speaks, else English.

Chinese in any script or region (``zh``, ``zh-CN``, ``zh-Hans``, ``zh-TW``, ``zh-Hant``,
``zh-HK``) is shown in Simplified Chinese: a reader of Traditional characters reads
Simplified far more easily than English, and the switch in the footer is one click away.
Its catalogue is app/translations/zh/ (see ``_CODES``).

An email is in its recipient's language: the locale saved on the account, whoever
asked for it (see ``app.mail.outbox``, which renders it under ``force_locale``).
"""

from datetime import UTC
from functools import lru_cache

from babel import Locale
from babel.dates import format_date, format_time
from flask import Blueprint, redirect, request, session, url_for
from flask_babel import get_locale, ngettext
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import HiddenField, StringField
from wtforms.validators import AnyOf, DataRequired

DEFAULT_LOCALE = 'en'
# Each language: its name in itself (the footer shows it so), and its tag for <html lang>.
LANGUAGES = {
    'en': ('English', 'en'),
    'zh_CN': ('简体中文', 'zh-CN'),
}
# The primary subtag of a browser's language, and the locale that serves it.
BROWSER_LANGUAGES = {'en': 'en', 'zh': 'zh_CN'}
SESSION_KEY = 'locale'
# Babel reads 'zh_CN' as zh_Hans_CN, whose catalogue gettext finds in translations/zh/
# (it looks for zh_Hans_CN, then zh): the one Chinese catalogue, in Simplified characters.
_CODES = {Locale.parse(code): code for code in LANGUAGES}

bp = Blueprint('i18n', __name__)


def browser_locale():
    """The first language of the browser's Accept-Language that Microblog speaks, or None."""
    for tag, quality in request.accept_languages:
        if quality <= 0:
            continue
        primary = tag.replace('_', '-').split('-', 1)[0].lower()
        if primary in BROWSER_LANGUAGES:
            return BROWSER_LANGUAGES[primary]
    return None


def select_locale():
    """The locale of this request (Flask-Babel's locale selector).

    No query: the account, with its locale, is loaded for the request anyway.
    """
    if not request:
        return None
    if current_user.is_authenticated and current_user.locale in LANGUAGES:
        return current_user.locale
    chosen = session.get(SESSION_KEY)
    if chosen in LANGUAGES:
        return chosen
    return browser_locale()


def current_locale():
    """The locale code of this page ('en', 'zh_CN')."""
    return _CODES.get(get_locale(), DEFAULT_LOCALE)


def html_lang():
    """The BCP 47 tag of this page's language, for ``<html lang>``."""
    return LANGUAGES.get(current_locale(), LANGUAGES[DEFAULT_LOCALE])[1]


def format_moment(moment):
    """A date and time in the reader's language, in UTC: "Nov 25, 2026, 4:05 AM UTC"."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _moment_format(get_locale() or _DEFAULT).text(moment)


_DEFAULT = Locale.parse(DEFAULT_LOCALE)


class MomentFormat:
    """One locale's "medium" date and "short" time, in UTC, as Babel formats them.

    Babel parses its patterns once but still spends about 0.1 ms a call looking up locale
    data for each field: a page of 25 posts spent more on its dates than on its query. A
    date's text depends only on its day, a time's on its hour and minute (no seconds:
    tests/test_i18n.py compares with Babel), so each text is kept once formatted: the days
    and minutes that pages show are few, and the same from one view to the next.
    """

    KEPT = 10_000  # texts of each kind; past that many, they are all forgotten

    def __init__(self, locale):
        self.locale = locale
        self.pattern = locale.datetime_formats['medium']
        self.dates = {}
        self.times = {}

    def text(self, moment):
        """The text of an aware datetime."""
        # Babel formats a datetime's date as it carries it, and its time in UTC.
        day = moment.date()
        date = self.dates.get(day)
        if date is None:
            date = self._keep(self.dates, day, format_date(day, 'medium', locale=self.locale))
        at = moment.astimezone(UTC)
        minute = (at.hour, at.minute)
        time = self.times.get(minute)
        if time is None:
            time = self._keep(
                self.times,
                minute,
                format_time(at.replace(second=0, microsecond=0), 'short', UTC, self.locale),
            )
        return self.pattern.format(time, date) + ' UTC'

    def _keep(self, texts, key, text):
        if len(texts) >= self.KEPT:
            texts.clear()
        texts[key] = text
        return text


@lru_cache(maxsize=16)
def _moment_format(locale):
    return MomentFormat(locale)


# Languages whose sentences follow one another with no space: their full stop (。)
# ends a sentence, and a space after it reads as a stray gap.
UNSPACED_LANGUAGES = frozenset({'zh', 'ja'})


def join_sentences(*sentences):
    """Translated sentences as one text: spaced apart in English, run together in Chinese."""
    locale = get_locale()
    unspaced = locale is not None and locale.language in UNSPACED_LANGUAGES
    return ('' if unspaced else ' ').join(str(sentence) for sentence in sentences if sentence)


def format_duration(seconds):
    """A lifetime in words, in the current language: "10 minutes", "1 hour", "3 days"."""
    if seconds % 86400 == 0:
        return ngettext('%(num)s day', '%(num)s days', seconds // 86400)
    if seconds % 3600 == 0:
        return ngettext('%(num)s hour', '%(num)s hours', seconds // 3600)
    if seconds % 60 == 0:
        return ngettext('%(num)s minute', '%(num)s minutes', seconds // 60)
    return ngettext('%(num)s second', '%(num)s seconds', seconds)


class LanguageForm(FlaskForm):
    """The footer's switch: one button per language, each a POST with CSRF."""

    # Each button of the footer sends its own locale; this field is never rendered.
    locale = StringField(validators=[DataRequired(), AnyOf(list(LANGUAGES))])
    next = HiddenField()


def next_for_switch():
    """Where the switch brings the reader back: this page, never a URL that holds a token."""
    if request.endpoint == 'auth.reset_password':
        return url_for('auth.reset_password_form')
    if request.method != 'GET':
        return request.path
    return request.full_path.rstrip('?')


@bp.route('/language', methods=['POST'])
def set_language():
    """Show the site in the language chosen: saved on the account, or in this browser's session."""
    from app import db
    from app.auth.routes import is_safe_next

    form = LanguageForm()
    if form.validate_on_submit():
        locale = form.locale.data
        session[SESSION_KEY] = locale
        if current_user.is_authenticated:
            current_user.locale = locale
            db.session.commit()
    target = form.next.data
    return redirect(target if is_safe_next(target) else url_for('main.index'))


def init_app(app, babel):
    """Bind Flask-Babel, the switch and the template helpers to ``app``."""
    babel.init_app(app, default_locale=DEFAULT_LOCALE, locale_selector=select_locale)
    app.register_blueprint(bp)
    app.jinja_env.globals.update(
        html_lang=html_lang,
        current_locale=current_locale,
        languages=LANGUAGES,
        language_form=LanguageForm,
        next_for_switch=next_for_switch,
    )
    app.jinja_env.filters['moment'] = format_moment
    app.jinja_env.filters['duration'] = format_duration
    from app.auth.sessions import device_label

    app.jinja_env.filters['device_label'] = device_label

    @app.after_request
    def vary_on_language(response):
        # The same URL answers in the language of the browser that asks.
        if response.mimetype == 'text/html':
            response.vary.add('Accept-Language')
            response.vary.add('Cookie')
        return response
