"""Hostile input never gets a 500: a table of attacks with their answers, then random strings."""

import re
from urllib.parse import quote, urlsplit

import jwt
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import db, mailer
from app.models import Post, User
from tests.helpers import PASSWORD, links_in, sign_in_as

NEW_PASSWORD = 'quiet-Meadow-lantern-42'
INVALID_LINK = 'This reset link is invalid or has expired.'
SITE = 'microblog.example.com'
MIB = 1024 * 1024
FORM = 'application/x-www-form-urlencoded'


@pytest.fixture
def susan(make_user):
    """The account the hostile requests aim at."""
    return make_user('susan')


def fresh_susan():
    return db.session.scalar(sa.select(User).where(User.email == 'susan@example.com'))


def become(client, state):
    """Put the client in a state without a password check: 'anonymous', 'logged in', 'link'."""
    user = fresh_susan()
    with client.session_transaction() as session:
        session.clear()
    if state == 'logged in':
        sign_in_as(client, user)
    elif state == 'link':
        client.get(f'/reset_password/{user.get_reset_password_token()}')
    return client


def flashes(client):
    return re.findall(r'<p class="flash[^"]*"[^>]*>(.*?)</p>', client.get('/login').text)


# Tokens and paths


def _none_token(user):
    claims = {'reset_password': user.id, 'state': user.reset_state(), 'exp': 2**40}
    return jwt.encode(claims, None, algorithm='none')


TOKEN_CASES = [
    ('very long', 'A' * 10_000, 302),
    ('long, JWT-shaped', 'a' * 3000 + '.' + 'b' * 3000 + '.c', 302),
    ('non-ASCII', '%C3%A9t%C3%A9-%E2%98%83', 302),
    ('invalid UTF-8', '%FF%FE%C3%28', 302),
    ('right-to-left override', 'abc%E2%80%AEdef', 302),
    ('fullwidth look-alike', quote('ｅｙＪｈｂＧｃｉＯｉＪＩＵｚＩ１ＮｉＪ９'), 302),
    ('emoji', quote('🔑.🔑.🔑'), 302),
    ('NUL', '%00', 400),
    ('NUL after a real token', '{token}%00', 400),
    ('dot dot slash', '..%2F..%2Fetc%2Fpasswd', 404),
    ('dot dot', '..', 302),
    ('JSON', quote('{"reset_password": 1}'), 302),
    ('alg none', '{none}', 302),
    ('real token, a space after', '{token}%20', 302),
    ('real token, upper-cased', '{upper}', 302),
    ('real token twice', '{token}.{token}', 302),
]


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    ('token', 'status'), [row[1:] for row in TOKEN_CASES], ids=[row[0] for row in TOKEN_CASES]
)
def test_hostile_reset_tokens(client, susan, token, status):
    real = susan.get_reset_password_token()
    path = '/reset_password/' + token.format(
        token=real, upper=real.upper(), none=_none_token(susan)
    )
    response = client.get(path)
    assert response.status_code == status
    if status == 302:
        assert response.headers['Location'] == '/reset_password_request'
        assert flashes(client) == [INVALID_LINK]
    assert susan.check_password(PASSWORD)


PATH_CASES = [
    ('user NUL', '/user/%00', 400),
    ('user very long', '/user/' + 'x' * 10_000, 404),
    ('user invalid UTF-8', '/user/%FF%FE', 404),
    ('user dot dot slash', '/user/..%2Fadmin', 404),
    ('before NUL', '/explore?before=%00', 400),
    ('before negative', '/explore?before=-1', 200),
    ('before too large', '/explore?before=99999999999999999999999', 200),
    ('before invalid UTF-8', '/explore?before=%FF', 200),
    ('before a float', '/index?before=1e9', 200),
    ('after hex, before NaN', '/index?after=0x10&before=NaN', 200),
    ('before 5000 digits', '/user/susan?before=' + '9' * 5000, 200),
]


@pytest.mark.parametrize(
    ('path', 'status'), [row[1:] for row in PATH_CASES], ids=[row[0] for row in PATH_CASES]
)
def test_hostile_paths_and_query_strings(client, susan, path, status):
    become(client, 'logged in')
    assert client.get(path).status_code == status


# Form fields

FORMS = {
    '/login': ('anonymous', ['username', 'password']),
    '/register': ('anonymous', ['username', 'email', 'password', 'password2']),
    '/reset_password_request': ('anonymous', ['email']),
    '/reset_password': ('link', ['password', 'password2']),
    '/index': ('logged in', ['post']),
    '/edit_profile': ('logged in', ['username', 'about_me']),
}
LONG_FIELDS = [
    ('/login', 'username', 'Field cannot be longer than 64 characters.'),
    ('/login', 'password', 'Field cannot be longer than 128 characters.'),
    ('/register', 'username', 'Field cannot be longer than 64 characters.'),
    ('/register', 'email', 'Field cannot be longer than 120 characters.'),
    ('/register', 'password', 'Use at most 128 characters.'),
    ('/reset_password_request', 'email', 'Field cannot be longer than 320 characters.'),
    ('/reset_password', 'password', 'Use at most 128 characters.'),
    ('/index', 'post', 'Field must be between 1 and 140 characters long.'),
    ('/edit_profile', 'username', 'Field cannot be longer than 64 characters.'),
    ('/edit_profile', 'about_me', 'Field cannot be longer than 140 characters.'),
]


@pytest.mark.parametrize(('path', 'field', 'message'), LONG_FIELDS)
def test_a_long_field_gets_a_message(client, susan, path, field, message):
    state, fields = FORMS[path]
    become(client, state)
    data = {name: 'Lantern-meadow-9' for name in fields}
    data[field] = 'x' * 100_000
    response = client.post(path, data=data)
    assert response.status_code == 200
    assert message in response.text
    if field == 'password':
        assert 'x' * 1000 not in response.text  # a password is never sent back


@pytest.mark.sqlite_only
@pytest.mark.parametrize('path', sorted(FORMS))
def test_a_one_megabyte_field_gets_a_clean_413(client, susan, path):
    state, fields = FORMS[path]
    become(client, state)
    response = client.post(path, data={fields[0]: 'x' * MIB})
    assert response.status_code == 413
    assert 'Request Entity Too Large' in response.text
    assert 'Traceback' not in response.text


# Werkzeug drops a field whose bytes are not UTF-8, so the form says it is missing.
NON_UTF8_BODIES = [
    ('/login', b'username=\xff\xfe\xfd&password=\xc3\x28'),
    ('/register', b'username=\xff\xfe&email=a%40example.com&password=\xc3\x28'),
    ('/reset_password_request', b'email=\xff\xfe%40example.com'),
    ('/reset_password', b'password=\xff\xfe\xfd&password2=\xff'),
    ('/edit_profile', b'username=\xe9t\xe9&about_me=\xff'),
    ('/index', b'post=caf\xe9'),
]


@pytest.mark.parametrize(('path', 'body'), NON_UTF8_BODIES)
def test_non_utf8_bytes_in_a_form(client, susan, path, body):
    become(client, FORMS[path][0])
    response = client.post(path, data=body, content_type=FORM)
    assert response.status_code == 200
    assert 'This field is required.' in response.text
    assert fresh_susan().username == 'susan' and fresh_susan().check_password(PASSWORD)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Post)) == 0


@pytest.fixture
def csrf_app(make_app):
    """An app with CSRF protection on, as in production."""
    app = make_app(WTF_CSRF_ENABLED=True)
    with app.app_context():
        db.session.add(User(username='susan', email='susan@example.com'))
        db.session.commit()
    return app


CSRF_POSTS = [
    ('/login', {'username': 'susan', 'password': PASSWORD}),
    ('/register', {'username': 'zoe', 'email': 'zoe@example.com', 'password': NEW_PASSWORD}),
    ('/reset_password_request', {'email': 'susan@example.com'}),
    ('/reset_password', {'password': NEW_PASSWORD, 'password2': NEW_PASSWORD}),
    ('/logout', {}),
    ('/index', {'post': 'hello'}),
    ('/edit_profile', {'username': 'mallory'}),
    ('/follow/susan', {}),
    ('/unfollow/susan', {}),
]


CSRF_FAILURES = {
    'missing': (None, False, 'The CSRF token is missing.'),
    'no session': ('forged-token', False, 'The CSRF session token is missing.'),
    'forged': ('forged-token', True, 'The CSRF token is invalid.'),
}


@pytest.mark.sqlite_only
@pytest.mark.parametrize('how', CSRF_FAILURES)
@pytest.mark.parametrize(('path', 'data'), CSRF_POSTS)
def test_a_post_without_its_csrf_token_is_refused(csrf_app, path, data, how):
    token, with_session, message = CSRF_FAILURES[how]
    client = csrf_app.test_client()
    if with_session:
        client.get('/login')  # the session now holds a real CSRF token
    if token:
        data = {**data, 'csrf_token': token}
    response = client.post(path, data=data, headers={'Referer': f'https://{SITE}/'})
    assert response.status_code == 400
    assert message in response.text
    with csrf_app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 1
        assert db.session.scalar(sa.select(User.username)) == 'susan'


HOST_CASES = [
    ({'Host': 'evil.example'}, None, 302),
    ({'Host': 'evil.example'}, [SITE], 400),
    ({'Host': f'{SITE}@evil.example'}, [SITE], 400),
    ({'Host': f'evil.example#{SITE}'}, [SITE], 400),
    ({'Host': f'{SITE}.evil.example'}, [SITE], 400),
    ({'X-Forwarded-Host': 'evil.example'}, [SITE], 302),
    ({'Host': SITE}, [SITE], 302),
]


@pytest.mark.sqlite_only
@pytest.mark.parametrize(('headers', 'trusted', 'status'), HOST_CASES)
def test_forged_hosts(make_app, headers, trusted, status):
    app = make_app(TRUSTED_HOSTS=trusted)
    with app.app_context():
        db.session.add(User(username='susan', email='susan@example.com'))
        db.session.commit()
    with mailer.record_messages() as sent:
        response = app.test_client().post(
            '/reset_password_request', data={'email': 'susan@example.com'}, headers=headers
        )
        app.extensions['mail_delivery'].flush()
    assert response.status_code == status
    if status == 302:
        assert response.headers['Location'] == '/login'
        [message] = sent
        assert all(link.startswith(f'https://{SITE}/') for link in links_in(message.body))
    else:
        assert sent == []


NEXT_CASES = [
    ('//evil.example', '/index'),
    ('///evil.example', '/index'),
    ('https://evil.example/', '/index'),
    ('http:evil.example', '/index'),
    ('/\\evil.example', '/index'),
    ('\\\\evil.example', '/index'),
    ('/\t/evil.example', '/index'),
    ('/\n/evil.example', '/index'),
    ('javascript:alert(1)', '/index'),
    ('data:text/html,hi', '/index'),
    ('evil.example', '/index'),
    ('', '/index'),
    ('/explore?before=5', '/explore?before=5'),
    ('/user/susan', '/user/susan'),
]


@pytest.mark.sqlite_only
@pytest.mark.parametrize(('target', 'location'), NEXT_CASES)
def test_next_never_leads_off_the_site(client, susan, target, location):
    response = client.post(
        '/login?next=' + quote(target, safe=''), data={'username': 'susan', 'password': PASSWORD}
    )
    assert response.status_code == 302
    assert response.headers['Location'] == location


# Links used again


def test_a_spent_link_is_refused(client, susan):
    token = susan.get_reset_password_token()
    client.get(f'/reset_password/{token}')
    client.post('/reset_password', data={'password': NEW_PASSWORD, 'password2': NEW_PASSWORD})
    assert flashes(client) == ['Your password has been reset.']
    response = client.get(f'/reset_password/{token}')
    assert response.headers['Location'] == '/reset_password_request'
    assert flashes(client) == [INVALID_LINK]


def test_a_link_after_a_later_password_change_is_refused(client, susan):
    token = susan.get_reset_password_token()
    susan.set_password('amber-Harbour-lantern-17')
    db.session.commit()
    response = client.get(f'/reset_password/{token}')
    assert response.headers['Location'] == '/reset_password_request'
    assert fresh_susan().check_password('amber-Harbour-lantern-17')


def test_a_link_opened_then_spent_elsewhere_is_refused_on_submit(app, susan):
    token = susan.get_reset_password_token()
    first, second = app.test_client(), app.test_client()
    for client in (first, second):
        assert client.get(f'/reset_password/{token}').headers['Location'] == '/reset_password'
    data = {'password': NEW_PASSWORD, 'password2': NEW_PASSWORD}
    assert first.post('/reset_password', data=data).headers['Location'] == '/login'
    other = {'password': 'amber-Harbour-lantern-17', 'password2': 'amber-Harbour-lantern-17'}
    response = second.post('/reset_password', data=other)
    assert response.headers['Location'] == '/reset_password_request'
    assert fresh_susan().check_password(NEW_PASSWORD)


def test_a_double_click_changes_the_password_once(client, susan, outbox):
    client.get(f'/reset_password/{susan.get_reset_password_token()}')
    data = {'password': NEW_PASSWORD, 'password2': NEW_PASSWORD}
    locations = [client.post('/reset_password', data=data).headers['Location'] for _ in range(2)]
    assert locations == ['/login', '/reset_password_request']
    outbox.wait()
    assert [m.subject for m in outbox] == ['[Microblog] Your password was changed']


@pytest.mark.parametrize('value', ['x' * 43, {'reset_password': 2}, None, 12345])
def test_a_reset_key_swapped_in_the_cookie_is_refused(client, make_user, value):
    susan, john = make_user('susan'), make_user('john')
    client.get(f'/reset_password/{susan.get_reset_password_token()}')
    with client.session_transaction() as session:
        session['reset_session'] = value
    response = client.post(
        '/reset_password', data={'password': NEW_PASSWORD, 'password2': NEW_PASSWORD}
    )
    assert response.headers['Location'] == '/reset_password_request'
    assert susan.check_password(PASSWORD) and john.check_password(PASSWORD)


# Random strings (Hypothesis)

RANDOM = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
any_text = st.text(max_size=200)


@pytest.mark.parametrize('path', sorted(FORMS))
@RANDOM
@given(data=st.data())
def test_random_form_input_never_breaks_a_page(app, susan, path, data):
    state, fields = FORMS[path]
    values = data.draw(st.fixed_dictionaries({name: any_text for name in fields}))
    if path == '/login':
        values['remember_me'] = data.draw(st.sampled_from(['', 'y', 'on']) | any_text)
    client = become(app.test_client(), state)
    response = client.post(path, data=values)
    assert response.status_code < 500


PATHS = {
    '/reset_password/{}': 'anonymous',
    '/user/{}': 'logged in',
    '/explore?before={}': 'logged in',
    '/index?before={}': 'logged in',
    '/user/susan?after={}': 'logged in',
    '/login?next={}': 'anonymous',
}


@pytest.mark.parametrize('where', sorted(PATHS))
@RANDOM
@given(value=st.text(min_size=1, max_size=300))
def test_random_paths_and_queries_never_break_a_page(app, susan, where, value):
    client = become(app.test_client(), PATHS[where])
    response = client.get(where.format(quote(value, safe='')))
    assert response.status_code < 500


def is_on_site(location):
    """Whether a browser following ``location`` stays on this site."""
    cleaned = re.sub(r'[\t\n\r]', '', location)  # browsers drop these in URLs
    parts = urlsplit(cleaned.replace('\\', '/'))
    return cleaned.startswith('/') and not parts.scheme and not parts.netloc


@pytest.mark.sqlite_only
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    target=st.one_of(
        st.text(max_size=60),
        st.builds(
            lambda head, tail: head + tail,
            st.sampled_from(['/', '//', '\\', '/\\', 'https:', 'http://', '/\t/', ' /']),
            st.text(max_size=40),
        ),
    )
)
def test_random_next_never_leads_off_the_site(app, susan, target):
    client = app.test_client()
    response = client.post(
        '/login?next=' + quote(target, safe=''), data={'username': 'susan', 'password': PASSWORD}
    )
    assert response.status_code in (302, 400)
    if response.status_code == 302:
        assert is_on_site(response.headers['Location']), response.headers['Location']
