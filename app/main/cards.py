"""Post cards, each rendered once per process and kept.

A listing page spent most of its template time writing its 25 cards (escaping, two
dates, the markup), the same cards on every view. A card's text is a function of what it
shows: its author's link, picture and name, the post's time and body, and the page's
language (for the date; dates are always in UTC). So each card is kept under exactly
those values: a renamed author, a new picture, another language or a different URL
prefix is another key, and a new card. Posts are never edited, but the body is part of
the key all the same, so that nothing but the shown values decides which card is used.

The cards are kept per app in a bounded LRU (``KEPT`` cards: some megabytes), and rendered
from the ``card`` macro of ``_post_card.html``, so escaping is Jinja's, as everywhere.
"""

from functools import lru_cache

from flask import current_app
from flask_babel import get_locale
from markupsafe import Markup

KEPT = 4096
_EXTENSION = 'microblog.post_cards'


def init_app(app):
    """Give ``app`` its own kept cards and the ``post_cards`` template global."""

    # In debug mode templates reload as they are edited: keep no card, or an edited
    # card template would not show until the app restarts.
    @lru_cache(maxsize=0 if app.debug or app.jinja_env.auto_reload else KEPT)
    def card(author_url, avatar, username, timestamp, body, locale):
        # ``locale`` is only part of the key: the macro's date filter reads the
        # request's locale, which is the one passed in.
        macro = app.jinja_env.get_template('_post_card.html').module.card
        return macro(author_url, avatar, username, timestamp, body)

    app.extensions[_EXTENSION] = card
    app.add_template_global(post_cards)


def post_cards(posts):
    """The cards of ``posts`` (ShownPost), as one piece of markup."""
    card = current_app.extensions[_EXTENSION]
    locale = get_locale()
    # A listing's posts by one author share one ShownAuthor, which finds its picture once.
    return Markup(
        ''.join(
            card(
                post.author.url(),
                post.author.avatar(48),
                post.author.username,
                post.timestamp,
                post.body,
                locale,
            )
            for post in posts
        )
    )


def kept_cards(app):
    """What the cache of ``app`` holds (``functools`` cache info): for tests."""
    return app.extensions[_EXTENSION].cache_info()
