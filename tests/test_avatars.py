"""Avatars drawn by the app from a keyed hash, Gravatar only when asked for (issue 11)."""

import hashlib
import re
import xml.etree.ElementTree as ET

import pytest
import sqlalchemy as sa
from markupsafe import escape

from app import db
from app.avatars import avatar_digest, avatar_svg
from app.models import Post, User
from tests.helpers import PASSWORD, recorded_statements

# Nothing here depends on the database: SQLite is enough.
pytestmark = pytest.mark.sqlite_only

SVG = '{http://www.w3.org/2000/svg}svg'
OTHER_KEY = 'another-secret-key-that-is-at-least-32-bytes'


def img_sources(html):
    return re.findall(r'<img[^>]*\ssrc="([^"]+)"', html)


def image_policy(response):
    [directive] = [
        part.strip()
        for part in response.headers['Content-Security-Policy'].split(';')
        if part.strip().startswith('img-src')
    ]
    return directive


def logged_in_pages(client, make_user):
    """The pages that show avatars, as a logged-in user sees them."""
    susan = make_user('susan', email='Susan.Smith@Example.com')
    make_user('john')
    client.post('/login', data={'username': 'john', 'password': PASSWORD})
    client.post('/follow/susan')
    db.session.add(susan)
    client.post('/index', data={'post': 'hello'})
    return {path: client.get(path) for path in ('/index', '/explore', '/user/susan', '/user/john')}


def secrets_of(email):
    """What an avatar must never publish about an address."""
    folded = email.strip().lower().encode()
    return [
        hashlib.md5(folded).hexdigest(),
        hashlib.sha256(folded).hexdigest(),
        hashlib.md5(email.encode()).hexdigest(),
        email.lower(),
        email.split('@')[0].lower(),
    ]


def test_pages_show_pictures_drawn_by_the_app(client, make_user):
    pages = logged_in_pages(client, make_user)
    for path, response in pages.items():
        sources = img_sources(response.text)
        assert sources, path
        for source in sources:
            assert re.fullmatch(r'/avatar/[0-9a-f]{32}\.svg', source), (path, source)
            for secret in secrets_of('Susan.Smith@Example.com'):
                assert secret not in source.lower()
        assert 'gravatar' not in response.text
        assert image_policy(response) == "img-src 'self'"


def test_each_account_has_its_own_picture_named_by_a_keyed_hash(app, make_user, make_app):
    susan, john = make_user('susan'), make_user('john')
    assert susan.avatar(48) != john.avatar(48)
    assert susan.avatar(48) == susan.avatar(128)
    unkeyed = hashlib.sha256(f'avatar:{susan.id}'.encode()).hexdigest()[:32]
    assert avatar_digest(susan.id) != unkeyed
    # Keyed with SECRET_KEY: another key, another name (and picture) for the same account.
    other = make_app(create_tables=False, SECRET_KEY=OTHER_KEY)
    with other.app_context():
        other_digest = avatar_digest(susan.id)
    assert other_digest != avatar_digest(susan.id)


def test_the_picture_is_an_svg_cached_for_a_year(app, client, make_user):
    susan = make_user('susan')
    client.post('/login', data={'username': 'susan', 'password': PASSWORD})
    path = f'/avatar/{avatar_digest(susan.id)}.svg'
    with recorded_statements(app) as statements:
        response = client.get(path)
    assert statements == []  # no session, no last_seen write for an image
    assert response.status_code == 200
    assert response.mimetype == 'image/svg+xml'
    assert response.headers['Cache-Control'] == 'public, max-age=31536000, immutable'
    assert response.headers['Content-Security-Policy'] == "default-src 'none'"
    assert response.headers['X-Content-Type-Options'] == 'nosniff'
    # (Flask-Login reads the session after every request, hence a Vary: Cookie.)
    assert 'Set-Cookie' not in response.headers
    root = ET.fromstring(response.data)
    assert root.tag == SVG
    assert not re.search(r'script|href|on\w+=|url\(|<style|foreignObject', response.text, re.I)
    assert client.get(path).data == response.data  # the same drawing every time


def test_pictures_differ_from_account_to_account(app):
    drawings = {avatar_svg(avatar_digest(user_id)) for user_id in range(1, 51)}
    assert len(drawings) == 50


@pytest.mark.parametrize(
    'name',
    ['0' * 31, '0' * 33, 'G' * 32, 'A' * 32, '..%2F..%2Fetc', '0' * 31 + '%0A', ' ' + '0' * 31],
)
def test_a_picture_name_that_is_not_a_digest_is_404(client, name):
    assert client.get(f'/avatar/{name}.svg').status_code == 404


def test_gravatar_only_when_asked_for_and_by_sha256(make_app, make_user):
    app = make_app(AVATARS='gravatar')
    client = app.test_client()
    with app.app_context():
        pages = logged_in_pages(client, make_user)
        digest = hashlib.sha256(b'susan.smith@example.com').hexdigest()
        expected = f'https://www.gravatar.com/avatar/{digest}?d=identicon&amp;s=128'
        assert expected in pages['/user/susan'].text
        for response in pages.values():
            for source in img_sources(response.text):
                assert source.startswith('https://www.gravatar.com/avatar/')
                assert hashlib.md5(b'susan.smith@example.com').hexdigest() not in source
            assert image_policy(response) == "img-src 'self' https://www.gravatar.com"


CARD = re.compile(r'<a href="/user/(\w+)">\s*<img class="avatar" src="([^"]+)"')


@pytest.mark.parametrize('setting', ['local', 'gravatar'])
def test_a_post_card_shows_its_authors_own_picture(make_app, make_user, setting):
    app = make_app(AVATARS=setting)
    client = app.test_client()
    with app.app_context():
        logged_in_pages(client, make_user)  # john, following susan, posted 'hello'
        users = {user.username: user for user in db.session.scalars(sa.select(User))}
        db.session.add(Post(body='hello from susan', author=users['susan']))
        db.session.commit()
        with app.test_request_context('/'):  # the URLs a page gives, not an email's
            pictures = {name: str(escape(user.avatar(48))) for name, user in users.items()}
        for path in ('/index', '/explore', '/user/susan'):
            cards = CARD.findall(client.get(path).text)
            assert cards, path
            for username, source in cards:
                assert source == pictures[username], (path, username)
        assert {username for username, _ in CARD.findall(client.get('/explore').text)} == {
            'susan',
            'john',
        }


def test_an_unknown_avatars_setting_stops_the_app(make_app):
    with pytest.raises(RuntimeError, match="AVATARS='robohash': use local"):
        make_app(AVATARS='robohash')
