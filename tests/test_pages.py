"""Every page as a user sees it: what it shows, where it sends you, what it says to bad input."""

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app import db
from app.avatars import avatar_digest
from app.errors.handlers import describe_wait
from app.models import Post, User, utcnow
from tests.helpers import PASSWORD

# Babel's medium date and short time for English, in UTC: "Nov 25, 2026, 4:05 AM UTC".
ENGLISH_MOMENT = r'[A-Z][a-z]{2} \d{1,2}, \d{4}, \d{1,2}:\d\d\s[AP]M UTC'


def register(client, username='susan', email='susan@example.com', password=PASSWORD, **extra):
    data = {'username': username, 'email': email, 'password': password, 'password2': password}
    data.update(extra)
    return client.post('/register', data=data)


@pytest.mark.sqlite_only
@pytest.mark.parametrize('path', ['/', '/index', '/explore', '/user/susan', '/edit_profile'])
def test_pages_that_need_login_redirect_to_login(client, make_user, path):
    make_user('susan')
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers['Location'].startswith('/login?next=')
    page = client.get(response.headers['Location'])
    assert 'Please log in to access this page.' in page.text


@pytest.mark.sqlite_only
@pytest.mark.parametrize('path', ['/follow/susan', '/unfollow/susan'])
def test_follow_needs_login(client, make_user, path):
    make_user('susan')
    response = client.post(path)
    assert response.headers['Location'].startswith('/login?next=')


@pytest.mark.sqlite_only
def test_login_page(client):
    response = client.get('/login')
    assert response.status_code == 200
    assert 'Sign In' in response.text
    assert 'href="/reset_password_request"' in response.text
    assert 'Click to Reset It' in response.text


def test_register_then_login(client):
    response = register(client)
    assert response.headers['Location'] == '/login'
    assert flashes(client.get('/login').text) == [
        (
            'info',
            'Check your email: we sent a message to susan@example.com. Open the link in it '
            'to confirm your address, then sign in.',
        )
    ]
    user = db.session.scalar(sa.select(User).where(User.username == 'susan'))
    assert user.email == 'susan@example.com'
    assert user.check_password(PASSWORD)


def test_register_normalises_the_email_domain(client):
    register(client, email='Susan@EXAMPLE.COM')
    user = db.session.scalar(sa.select(User))
    assert user.email == 'Susan@example.com'


@pytest.mark.parametrize(
    ('fields', 'message'),
    [
        ({'username': 'SUSAN'}, 'Please use a different username.'),
        ({'email': 'not-an-email'}, 'An email address must have an @-sign.'),
        ({'password2': 'something-else-entirely'}, 'Passwords must match.'),
        ({'password': 'short', 'password2': 'short'}, 'Use at least 8 characters.'),
        ({'password': 'password123', 'password2': 'password123'}, 'common password'),
        ({'username': ''}, 'This field is required.'),
        ({'username': 'has space'}, 'Use only letters, numbers, dots, dashes and underscores.'),
        ({'username': 'x' * 65}, 'Field cannot be longer than 64 characters.'),
    ],
)
def test_register_errors(client, make_user, fields, message):
    make_user('susan', 'susan@example.com')
    data = {
        'username': 'other',
        'email': 'other@example.com',
        'password': PASSWORD,
        'password2': PASSWORD,
    }
    data.update(fields)
    response = client.post('/register', data=data)
    assert response.status_code == 200
    assert message in response.text
    assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 1


@pytest.mark.sqlite_only
def test_logged_in_user_is_sent_away_from_login_and_register(client, make_user, auth):
    make_user('susan')
    auth.login()
    assert client.get('/login').headers['Location'] == '/index'
    assert client.get('/register').headers['Location'] == '/index'


def test_login_and_logout(client, make_user, auth):
    make_user('susan')
    response = auth.login()
    assert response.headers['Location'] == '/index'
    assert 'Hi, <span class="username">susan</span>!' in client.get('/index').text
    assert client.get('/logout').status_code == 200  # a page asking to confirm
    assert client.get('/index').status_code == 200  # still logged in
    response = auth.logout()
    assert response.headers['Location'] == '/login'
    assert client.get('/index').status_code == 302


@pytest.mark.sqlite_only
def test_logging_out_says_one_thing(client, make_user, auth):
    make_user('susan')
    auth.login()
    page = client.get(auth.logout().headers['Location']).text
    assert flashes(page) == [('info', 'You have been logged out.')]


def flashes(page):
    """The messages flashed on a page, with their kind (success, error or info)."""
    return re.findall(r'<p class="flash flash-(\w+)" role="\w+">([^<]*)</p>', page)


@pytest.mark.sqlite_only
def test_errors_and_successes_look_different(client, make_user, auth):
    page = client.get(register(client).headers['Location']).text
    assert [kind for kind, _ in flashes(page)] == ['info']
    auth.login()
    posted = client.post('/index', data={'post': 'Hello'}, follow_redirects=True)
    assert flashes(posted.text) == [('success', 'Your post is now live!')]
    auth.logout()
    client.get('/login')  # shows, and so takes, the logout message
    assert flashes(auth.login(password='not-the-password').text) == [
        ('error', 'Invalid username or password')
    ]
    assert '<p class="flash flash-error" role="alert">' in auth.login(password='x').text
    page = client.get(client.get('/index').headers['Location']).text
    assert flashes(page) == [('info', 'Please log in to access this page.')]


def test_login_is_case_insensitive_on_username(client, make_user, auth):
    make_user('susan')
    assert auth.login('SUSAN').headers['Location'] == '/index'


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    ('username', 'password'),
    [('susan', 'wrong-password-here'), ('nobody', PASSWORD), ('susan', '')],
)
def test_login_failures(client, make_user, username, password):
    make_user('susan')
    response = client.post('/login', data={'username': username, 'password': password})
    assert response.status_code == 200
    assert 'Invalid username or password' in response.text or 'This field is required.' in (
        response.text
    )
    assert client.get('/index').status_code == 302


@pytest.mark.sqlite_only
def test_remember_me_keeps_the_session_cookie_for_a_month(client, make_user, auth):
    make_user('susan')
    auth.login(remember_me=True)
    cookie = client.get_cookie('session', domain='microblog.example.com')
    assert cookie.http_only
    lifetime = cookie.expires - utcnow()
    assert timedelta(days=29) < lifetime <= timedelta(days=30)


@pytest.mark.sqlite_only
def test_remember_me_off_sets_no_cookie(client, make_user, auth):
    make_user('susan')
    auth.login()
    cookie = client.get_cookie('session', domain='microblog.example.com')
    assert cookie.expires is None  # ends with the browser
    assert client.get_cookie('remember_token', domain='microblog.example.com') is None


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    'target',
    [
        'https://evil.example/',
        '//evil.example',
        '///evil.example',
        '/\\evil.example',
        '\\\\evil.example',
        'https:evil.example',
        'javascript:alert(1)',
        'evil.example',
        '/\t/evil.example',
        '',
    ],
)
def test_login_never_redirects_off_site(client, make_user, auth, target):
    make_user('susan')
    response = client.post(
        '/login', query_string={'next': target}, data={'username': 'susan', 'password': PASSWORD}
    )
    assert response.headers['Location'] == '/index'


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    ('target', 'location'),
    [
        ('/explore', '/explore'),
        # A space is printable: a page whose address holds one is a page of the site.
        ('/explore?q=two words', '/explore?q=two%20words'),
    ],
)
def test_login_follows_next_on_site(client, make_user, target, location):
    make_user('susan')
    response = client.post(
        '/login', query_string={'next': target}, data={'username': 'susan', 'password': PASSWORD}
    )
    assert response.headers['Location'] == location


def test_post_appears_on_index_and_explore(client, make_user, auth):
    make_user('susan')
    auth.login()
    response = client.post('/index', data={'post': 'Hello, world'})
    assert response.headers['Location'] == '/index'
    page = client.get('/index').text
    assert 'Your post is now live!' in page
    assert 'Hello, world' in page
    assert 'Hello, world' in client.get('/explore').text
    assert 'Hello, world' in client.get('/user/susan').text


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    ('body', 'message'),
    [('x' * 141, 'Field must be between 1 and 140 characters long.'), ('   ', 'required')],
)
def test_bad_posts(client, make_user, auth, body, message):
    make_user('susan')
    auth.login()
    response = client.post('/index', data={'post': body})
    assert response.status_code == 200
    assert message in response.text
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Post)) == 0


def test_index_shows_followed_and_own_posts_newest_first(client, make_user, auth):
    susan, john, mary = make_user('susan'), make_user('john'), make_user('mary')
    now = utcnow()
    db.session.add_all(
        [
            Post(body='from john', author=john, timestamp=now - timedelta(minutes=3)),
            Post(body='from mary', author=mary, timestamp=now - timedelta(minutes=2)),
            Post(body='from susan', author=susan, timestamp=now - timedelta(minutes=1)),
        ]
    )
    susan.follow(john)
    db.session.commit()
    auth.login()
    page = client.get('/index').text
    assert 'from mary' not in page
    assert page.index('from susan') < page.index('from john')
    explore = client.get('/explore').text
    assert explore.index('from susan') < explore.index('from mary') < explore.index('from john')


@pytest.mark.parametrize('count', [6, 7])
@pytest.mark.parametrize('path', ['/index', '/explore', '/user/susan'])
def test_pagination_walks_older_and_newer(make_app, path, count):
    # Three posts a page; posts two by two at the same second, so that a page can end
    # between two posts of one timestamp; six posts fill two pages exactly.
    app = make_app(POSTS_PER_PAGE=3)
    client = app.test_client()
    with app.app_context():
        susan = User(username='susan', email='susan@example.com')
        susan.set_password(PASSWORD)
        now = utcnow()
        db.session.add(susan)
        db.session.add_all(
            Post(body=f'post number {n}', author=susan, timestamp=now + timedelta(seconds=n // 2))
            for n in range(count)
        )
        db.session.commit()
    client.post('/login', data={'username': 'susan', 'password': PASSWORD})

    def shown(text):
        found = [n for n in range(count) if f'post number {n}<' in text]
        return sorted(found, key=lambda n: text.index(f'post number {n}<'))

    newest_first = list(reversed(range(count)))
    expected = [newest_first[i : i + 3] for i in range(0, count, 3)]
    page = client.get(path).text
    pages, links = [shown(page)], [('Newer posts' in page, 'Older posts' in page)]
    # Bounded: a link that leads round in a circle fails the test instead of hanging it.
    while 'Older posts' in page and len(pages) <= count:
        page = client.get(_link(page, 'Older posts')).text
        pages.append(shown(page))
        links.append(('Newer posts' in page, 'Older posts' in page))
    assert pages == expected
    # Each page links to the newer and the older ones where there are any, and only there.
    assert links == [(i > 0, i < len(expected) - 1) for i in range(len(expected))]
    back = []
    while 'Newer posts' in page and len(back) <= count:
        page = client.get(_link(page, 'Newer posts')).text
        back.append((shown(page), 'Newer posts' in page, 'Older posts' in page))
    assert back == [(expected[i], i > 0, True) for i in reversed(range(len(expected) - 1))]


def _link(html, text):
    end = html.index(text)
    start = html.rindex('href="', 0, end) + len('href="')
    return html[start : html.index('"', start)].replace('&amp;', '&')


def test_profile_page(client, make_user, auth):
    susan = make_user('susan')
    susan.about_me = 'I like <b>cats</b>'
    db.session.add(Post(body='a post of susan', author=susan))
    db.session.commit()
    make_user('john')
    auth.login('john')
    page = client.get('/user/susan').text
    assert 'User: <span class="username">susan</span>' in page
    assert 'I like &lt;b&gt;cats&lt;/b&gt;' in page
    seen = re.search(r'Last seen <time datetime="([^"]+)" data-relative>on ([^<]+)</time>', page)
    assert seen[1].endswith('+00:00')  # scripts turn it into "5 minutes ago" in local time
    assert re.fullmatch(ENGLISH_MOMENT, seen[2])
    assert '0 followers, 0 following.' in page
    assert 'a post of susan' in page
    assert f'src="/avatar/{avatar_digest(susan.id)}.svg"' in page
    assert 'value="Follow"' in page


def test_unknown_user_is_404(client, make_user, auth):
    make_user('susan')
    auth.login()
    response = client.get('/user/nobody')
    assert response.status_code == 404
    assert 'Not Found' in response.text


def test_follow_and_unfollow(client, make_user, auth):
    susan, john = make_user('susan'), make_user('john')
    auth.login()
    response = client.post('/follow/john')
    assert response.headers['Location'] == '/user/john'
    page = client.get('/user/john').text
    assert 'You are following john!' in page
    assert '1 follower, 0 following.' in page
    assert 'value="Unfollow"' in page
    assert susan.is_following(john)

    client.post('/unfollow/john')
    page = client.get('/user/john').text
    assert 'You are not following john.' in page
    assert '0 followers, 0 following.' in page
    assert not susan.is_following(john)


@pytest.mark.parametrize(
    ('path', 'message'),
    [
        ('/follow/susan', 'You cannot follow yourself!'),
        ('/unfollow/susan', 'You cannot unfollow yourself!'),
        ('/follow/nobody', 'User nobody not found.'),
        ('/unfollow/nobody', 'User nobody not found.'),
    ],
)
def test_follow_errors(client, make_user, auth, path, message):
    make_user('susan')
    auth.login()
    response = client.post(path, follow_redirects=True)
    assert message in response.text


@pytest.mark.sqlite_only
def test_follow_is_not_a_get(client, make_user, auth):
    make_user('susan')
    make_user('john')
    auth.login()
    assert client.get('/follow/john').status_code == 405


def test_edit_profile(client, make_user, auth):
    make_user('susan')
    auth.login()
    page = client.get('/edit_profile').text
    assert 'value="susan"' in page
    response = client.post('/edit_profile', data={'username': 'susan', 'about_me': 'Hello'})
    assert response.headers['Location'] == '/edit_profile'
    assert 'Your changes have been saved.' in client.get('/edit_profile').text
    assert 'Hello' in client.get('/user/susan').text

    client.post('/edit_profile', data={'username': 'susanna', 'about_me': 'Hello'})
    assert client.get('/user/susanna').status_code == 200


@pytest.mark.parametrize(
    ('fields', 'message'),
    [
        ({'username': 'john'}, 'Please use a different username.'),
        ({'about_me': 'x' * 141}, 'Field cannot be longer than 140 characters.'),
        ({'username': ''}, 'This field is required.'),
    ],
)
def test_edit_profile_errors(client, make_user, auth, fields, message):
    make_user('susan')
    make_user('john')
    auth.login()
    data = {'username': 'susan', 'about_me': ''}
    data.update(fields)
    response = client.post('/edit_profile', data=data)
    assert response.status_code == 200
    assert message in response.text


def test_last_seen_is_updated(client, make_user, auth):
    susan = make_user('susan')
    long_ago = utcnow() - timedelta(days=30)
    susan.last_seen = long_ago
    db.session.commit()
    auth.login()
    client.get('/explore')
    db.session.expire_all()
    assert db.session.get(User, susan.id).last_seen > long_ago + timedelta(days=29)


@pytest.mark.sqlite_only
def test_404_page(client):
    response = client.get('/no/such/page')
    assert response.status_code == 404
    assert 'Sorry, that page does not exist.' in response.text


def test_500_page_rolls_back(make_app):
    app = make_app(PROPAGATE_EXCEPTIONS=False)

    @app.route('/boom')
    def boom():
        db.session.add(User(username='ghost', email='ghost@example.com'))
        db.session.flush()
        raise RuntimeError('boom')

    response = app.test_client().get('/boom')
    assert response.status_code == 500
    assert 'An unexpected error has occurred' in response.text
    with app.app_context():
        assert db.session.scalar(sa.select(User).where(User.username == 'ghost')) is None


@pytest.mark.sqlite_only
def test_missing_csrf_token_is_a_clean_400(make_app):
    app = make_app(WTF_CSRF_ENABLED=True)
    response = app.test_client().post('/login', data={'username': 'susan', 'password': PASSWORD})
    assert response.status_code == 400
    assert 'The CSRF token is missing.' in response.text


@pytest.mark.sqlite_only
def test_405_page_is_clean(client):
    response = client.delete('/login')
    assert response.status_code == 405
    assert 'Method Not Allowed' in response.text


@pytest.mark.sqlite_only
def test_explore_is_headed_explore(client, make_user, auth):
    make_user('susan')
    auth.login()
    page = client.get('/explore').text
    assert '<h1>Explore</h1>' in page
    assert 'Hi, ' not in page
    assert 'Hi, <span class="username">susan</span>!' in client.get('/index').text


@pytest.mark.sqlite_only
def test_the_post_box_says_its_limit_and_counts_down_with_a_local_script(client, make_user, auth):
    make_user('susan')
    auth.login()
    page = client.get('/index').text
    box = re.search(r'<textarea[^>]*>', page)[0]
    assert 'maxlength="140"' in box
    assert 'data-counter="post-count"' in box
    assert 'aria-describedby="post-count"' in box
    # Without scripts the limit is still said, and the browser keeps to it.
    assert re.search(
        r'<p class="hint counter" id="post-count" [^>]*>Up to 140 characters.</p>', page
    )
    assert '<script src="/static/app.js" defer></script>' in page
    with client.get('/static/app.js') as script:
        assert script.status_code == 200
        assert 'characters left' in script.text and 'data-relative' in script.text


@pytest.mark.sqlite_only
def test_post_times_are_utc_and_marked_for_the_relative_time_script(client, make_user, auth):
    susan = make_user('susan')
    db.session.add(Post(body='hello', author=susan))
    db.session.commit()
    auth.login()
    page = client.get('/explore').text
    time = re.search(r'<time datetime="([^"]+)" data-relative>([^<]+)</time>', page)
    assert time[1].endswith('+00:00')
    assert re.fullmatch(ENGLISH_MOMENT, time[2])


@pytest.mark.sqlite_only
def test_the_429_page_says_how_long_to_wait(make_app):
    app = make_app(RATELIMIT_ENABLED=True, RATELIMIT_LOGIN_PER_ADDRESS='1 per hour')
    client = app.test_client()
    data = {'username': 'nobody', 'password': 'not-the-password'}
    assert client.post('/login', data=data).status_code == 200
    response = client.post('/login', data=data)
    assert response.status_code == 429
    seconds = int(response.headers['Retry-After'])
    assert seconds > 0
    wait = re.search(r'Please wait (\d+ \w+) and try again\.', response.text)
    assert wait, response.text
    assert wait[1] == describe_wait(seconds)


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    ('seconds', 'words'),
    [
        (1, '1 second'),
        (59, '59 seconds'),
        (60, '1 minute'),
        (61, '2 minutes'),
        (3540, '59 minutes'),
        (3541, '1 hour'),
        (3600, '1 hour'),
        (3601, '1 hour'),
        (5400, '2 hours'),
        (7200, '2 hours'),
    ],
)
def test_waits_read_as_words(seconds, words):
    assert describe_wait(seconds) == words


@pytest.mark.sqlite_only
def test_pages_anchor_on_any_post_id_and_ignore_ids_no_post_can_have(client, make_user, auth):
    susan = make_user('susan')
    db.session.add_all(
        [
            Post(id=1000, body='lantern-post-1000', author=susan),
            Post(id=1001, body='lantern-post-1001', author=susan),
        ]
    )
    db.session.commit()
    auth.login()
    page = client.get('/explore?before=1001').text
    assert 'lantern-post-1000' in page and 'lantern-post-1001' not in page
    for value in ('0', '-1', str(2**63), '9' * 23):
        response = client.get(f'/explore?before={value}')
        assert response.status_code == 200
        assert 'lantern-post-1000' in response.text and 'lantern-post-1001' in response.text
