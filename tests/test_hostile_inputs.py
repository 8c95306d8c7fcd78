"""Hostile input never gets a 500: a table of known attacks, then random strings."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import PASSWORD

NEW_PASSWORD = 'quiet-Meadow-lantern-42'


def login(client):
    client.post('/login', data={'username': 'susan', 'password': PASSWORD})


@pytest.fixture
def susan(make_user):
    """The account the hostile requests aim at."""
    return make_user('susan')


TOKEN_PATHS = [
    ('/reset_password/' + 'A' * 5000, 302),
    ('/reset_password/%00', 400),
    ('/reset_password/..%2F..%2Fetc%2Fpasswd', 404),
    ('/reset_password/%C3%A9%E2%98%83', 302),
    ('/reset_password/%FF%FE', 302),
    ('/reset_password/eyJhbGciOiJub25lIn0.e30.', 302),
    ('/reset_password/' + '.' * 3, 302),
    ('/user/%00', 400),
    ('/explore?before=%00', 400),
    ('/user/' + 'x' * 5000, 404),
    ('/explore?before=-1', 200),
    ('/explore?before=99999999999999999999999', 200),
    ('/index?before=1e9', 200),
]


@pytest.mark.parametrize(('path', 'status'), TOKEN_PATHS)
def test_hostile_paths(client, susan, path, status):
    login(client)
    if path.startswith('/reset_password'):
        client.post('/logout')
    assert client.get(path).status_code == status


FORM_POSTS = [
    ('/login', {'username': 'x' * 100_000, 'password': 'y'}, 200),
    ('/login', {'username': 'susan', 'password': 'p' * 100_000}, 200),
    ('/register', {'username': 'a\x00b', 'email': 'a@example.com', 'password': 'x'}, 400),
    ('/register', {'username': 'zoe', 'email': 'a@' + 'b' * 300 + '.com', 'password': 'x'}, 200),
    ('/reset_password_request', {'email': 'x' * 2_000_000}, 413),
    ('/reset_password_request', {'email': 'susan@example.com\r\nBcc: evil@example.com'}, 200),
    ('/reset_password_request', {'email': ['a@example.com', 'b@example.com']}, 302),
]


@pytest.mark.parametrize(('path', 'data', 'status'), FORM_POSTS)
def test_hostile_form_fields(client, susan, path, data, status):
    assert client.post(path, data=data).status_code == status


def test_non_utf8_form_body(client, susan):
    body = b'username=\xff\xfe\xfd&password=\xc3\x28'
    response = client.post('/login', data=body, content_type='application/x-www-form-urlencoded')
    assert response.status_code == 200
    assert 'Sign In' in response.text


def test_spent_link_and_link_after_a_password_change(client, susan):
    spent = susan.get_reset_password_token()
    later_changed = susan.get_reset_password_token()
    client.get(f'/reset_password/{spent}')
    client.post('/reset_password', data={'password': NEW_PASSWORD, 'password2': NEW_PASSWORD})
    for token in (spent, later_changed):
        response = client.get(f'/reset_password/{token}')
        assert response.headers['Location'] == '/reset_password_request'


def test_session_token_swapped_after_verification_is_refused(client, make_user):
    susan, john = make_user('susan'), make_user('john')
    client.get(f'/reset_password/{susan.get_reset_password_token()}')
    with client.session_transaction() as session:
        session['reset_token'] = 'not-a-token'
    response = client.post(
        '/reset_password', data={'password': NEW_PASSWORD, 'password2': NEW_PASSWORD}
    )
    assert response.headers['Location'] == '/reset_password_request'
    assert susan.check_password(PASSWORD) and john.check_password(PASSWORD)


text = st.text(max_size=300)
FORMS = {
    '/login': ['username', 'password', 'remember_me'],
    '/register': ['username', 'email', 'password', 'password2'],
    '/reset_password_request': ['email'],
    '/reset_password': ['password', 'password2'],
    '/index': ['post'],
    '/edit_profile': ['username', 'about_me'],
}


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    path=st.sampled_from(sorted(FORMS)),
    values=st.lists(text, min_size=4, max_size=4),
    logged_in=st.booleans(),
)
def test_random_form_input_never_breaks_a_page(app, susan, path, values, logged_in):
    client = app.test_client()
    if logged_in:
        login(client)
    else:
        client.get(f'/reset_password/{susan.get_reset_password_token()}')
    data = dict(zip(FORMS[path], values, strict=False))
    assert client.post(path, data=data).status_code < 500


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    value=st.text(min_size=1, max_size=200),
    where=st.sampled_from(
        [
            '/reset_password/{}',
            '/user/{}',
            '/explore?before={}',
            '/index?after={}',
            '/login?next={}',
        ]
    ),
)
def test_random_paths_never_break_a_page(app, susan, value, where):
    from urllib.parse import quote

    client = app.test_client()
    login(client)
    if where.startswith('/reset_password'):
        client.post('/logout')
    response = client.get(where.format(quote(value, safe='')))
    assert response.status_code < 500
