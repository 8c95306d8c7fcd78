"""Post cards kept once rendered (app.main.cards): the same text as a fresh rendering,
escaped, and a new card whenever anything it shows changes."""

import re
from datetime import datetime

import pytest

from app import db
from app.main import cards
from app.main.cards import kept_cards
from app.models import Post
from tests.helpers import PASSWORD

ARTICLE = re.compile(r'<article class="post">.*?</article>', re.S)


def cards_of(client, path='/explore'):
    return ARTICLE.findall(client.get(path).text)


def test_a_kept_card_is_the_card_rendered_afresh_and_stays_escaped(client, make_user, auth):
    make_user('susan')
    auth.login()
    client.post('/index', data={'post': '<script>alert("hi")</script> & <b>bold</b>'})
    first = cards_of(client)
    kept = kept_cards(client.application)
    second = cards_of(client)
    assert kept_cards(client.application).hits == kept.hits + 1  # the second came from the cache
    assert second == first
    [card] = second
    assert '&lt;script&gt;alert(&#34;hi&#34;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;' in card
    assert '<script>' not in card and '<b>' not in card


def test_a_renamed_author_shows_the_new_name_at_once(client, make_user, auth):
    make_user('susan')
    auth.login()
    client.post('/index', data={'post': 'before the rename'})
    assert 'title="susan">susan</a>' in cards_of(client)[0]
    response = client.post('/edit_profile', data={'username': 'suzanne', 'about_me': ''})
    assert response.status_code == 302
    for path in ('/explore', '/index', '/user/suzanne'):
        [card] = cards_of(client, path)
        assert 'href="/user/suzanne"' in card and 'title="suzanne">suzanne</a>' in card, path
        assert 'susan' not in card, path


@pytest.mark.sqlite_only
def test_a_new_address_gives_a_new_gravatar_at_once(make_app, make_user):
    app = make_app(AVATARS='gravatar')
    client = app.test_client()
    with app.app_context():
        susan = make_user('susan', email='one@example.com')
        client.post('/login', data={'username': 'susan', 'password': PASSWORD})
        db.session.add(Post(body='hello', author=susan))
        db.session.commit()
        [before] = cards_of(client)
        susan.email = 'two@example.com'
        db.session.commit()
        [after] = cards_of(client)
    assert before != after
    assert before.replace(*re.findall(r'avatar/(\w+)', before + after)) == after


def test_a_card_shown_in_chinese_then_english_has_each_languages_date(client, make_user, auth):
    susan = make_user('susan')
    db.session.add(Post(body='hello', author=susan, timestamp=datetime(2026, 11, 25, 4, 5)))
    db.session.commit()
    auth.login()
    client.post('/language', data={'locale': 'zh_CN', 'next': '/explore'})
    [chinese] = cards_of(client)
    client.post('/language', data={'locale': 'en', 'next': '/explore'})
    [english] = cards_of(client)
    client.post('/language', data={'locale': 'zh_CN', 'next': '/explore'})
    [chinese_again] = cards_of(client)
    assert '>2026年11月25日 04:05 UTC</time>' in chinese
    assert '>Nov 25, 2026, 4:05\u202fAM UTC</time>' in english
    assert chinese_again == chinese


def test_the_kept_cards_are_bounded(make_app, make_user, monkeypatch):
    monkeypatch.setattr(cards, 'KEPT', 3)
    app = make_app()
    client = app.test_client()
    with app.app_context():
        susan = make_user('susan')
        for number in range(5):
            db.session.add(Post(body=f'post {number}', author=susan))
        db.session.commit()
        client.post('/login', data={'username': 'susan', 'password': PASSWORD})
        assert len(cards_of(client)) == 5
        info = kept_cards(app)
        assert info.maxsize == 3 and info.currsize == 3


def test_no_card_is_kept_while_templates_reload_as_in_debug_mode(make_app, make_user):
    app = make_app(TEMPLATES_AUTO_RELOAD=True)
    client = app.test_client()
    with app.app_context():
        susan = make_user('susan')
        db.session.add(Post(body='hello', author=susan))
        db.session.commit()
        client.post('/login', data={'username': 'susan', 'password': PASSWORD})
        assert len(cards_of(client)) == 1
        assert kept_cards(app).currsize == 0  # nothing kept: the template may change
