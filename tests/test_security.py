"""A reset flow that cannot be abused: tokens, links, pages, sessions, passwords, limits."""

import base64
import json
import re
import threading

import pytest
import sqlalchemy as sa

import app.security
from app import db
from app.models import User
from tests.conftest import PASSWORD, TEST_REDIS_URL, links_in

NEW_PASSWORD = 'quiet-Meadow-lantern-42'
INVALID_LINK = 'This reset link is invalid or has expired.'
OLD_KEY = 'old-secret-key-that-is-at-least-32-bytes-long!'
NEW_KEY = 'new-secret-key-that-is-at-least-32-bytes-long!'


def open_link(client, token):
    return client.get(f'/reset_password/{token}')


def set_password(client, password=NEW_PASSWORD):
    return client.post('/reset_password', data={'password': password, 'password2': password})


def reset_with(client, token, password=NEW_PASSWORD):
    open_link(client, token)
    return set_password(client, password)


def payload_of(token):
    body = token.split('.')[1]
    return json.loads(base64.urlsafe_b64decode(body + '=' * (-len(body) % 4)))


def add_susan():
    """Create the account the tests aim at, in the current app context."""
    user = User(username='susan', email='susan@example.com')
    user.set_password(PASSWORD)
    db.session.add(user)
    db.session.commit()
    return user


# Tokens


def test_a_link_works_once_and_takes_every_other_link_with_it(client, make_user):
    user = make_user('susan')
    first, second = user.get_reset_password_token(), user.get_reset_password_token(300)
    assert reset_with(client, first).headers['Location'] == '/login'
    for token in (first, second):
        assert User.verify_reset_password_token(token) is None
        assert open_link(client, token).headers['Location'] == '/reset_password_request'


def test_the_payload_holds_nothing_secret(make_user):
    user = make_user('susan')
    payload = payload_of(user.get_reset_password_token())
    assert set(payload) == {'reset_password', 'state', 'iat', 'exp'}
    salt_and_hash = user.password_hash.split('$', 1)[1]
    for part in salt_and_hash.split('$'):
        assert part not in json.dumps(payload)


def test_key_rotation_keeps_links_sessions_and_remember_cookies(make_app):
    old_app = make_app(SECRET_KEY=OLD_KEY)
    with old_app.app_context():
        user = add_susan()
        old_token = user.get_reset_password_token()
    old_client = old_app.test_client()
    old_client.post('/login', data={'username': 'susan', 'password': PASSWORD})
    session_cookie = old_client.get_cookie('session', domain='microblog.example.com')

    rotated = make_app(create_tables=False, SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=[OLD_KEY])
    with rotated.app_context():
        user = db.session.scalar(sa.select(User))
        assert User.verify_reset_password_token(old_token) == user
        new_token = user.get_reset_password_token()
        assert new_token != old_token
    client = rotated.test_client()
    client.set_cookie('session', session_cookie.value, domain='microblog.example.com')
    assert client.get('/index').status_code == 200  # the old session still works

    remembered = old_app.test_client()
    remembered.post('/login', data={'username': 'susan', 'password': PASSWORD, 'remember_me': 'y'})
    remember = remembered.get_cookie('remember_token', domain='microblog.example.com')
    client = rotated.test_client()
    client.set_cookie('remember_token', remember.value, domain='microblog.example.com')
    response = client.get('/index')
    assert response.status_code == 200  # the old remember-me cookie still works...
    reissued = client.get_cookie('remember_token', domain='microblog.example.com')
    assert reissued.value != remember.value  # ...and comes back signed with the new key

    unrotated = make_app(create_tables=False, SECRET_KEY=NEW_KEY)
    client = unrotated.test_client()
    client.set_cookie('remember_token', remember.value, domain='microblog.example.com')
    assert client.get('/index').status_code == 302
    with unrotated.app_context():
        assert User.verify_reset_password_token(old_token) is None
        assert User.verify_reset_password_token(new_token) is not None


def test_concurrent_submissions_change_the_password_once(make_app):
    app = make_app()
    with app.app_context():
        user = add_susan()
        token = user.get_reset_password_token()
    clients = [app.test_client() for _ in range(4)]
    for client in clients:
        open_link(client, token)
    barrier = threading.Barrier(len(clients))
    locations = []

    def submit(client, password):
        barrier.wait(10)
        response = set_password(client, password)
        locations.append(response.headers['Location'])

    passwords = [f'{word}-Meadow-lantern-42' for word in ('quiet', 'amber', 'cobalt', 'dusty')]
    threads = [
        threading.Thread(target=submit, args=pair) for pair in zip(clients, passwords, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(locations).count('/login') == 1
    assert locations.count('/reset_password_request') == len(clients) - 1
    winner = passwords[clients.index(next(c for c in clients if _flashed(c, 'has been reset')))]
    with app.app_context():
        assert db.session.scalar(sa.select(User)).check_password(winner)
    app.extensions['mail_delivery'].flush()


def _flashed(client, text):
    return text in client.get('/login').text


# Links and pages


@pytest.mark.parametrize(
    'headers',
    [{'Host': 'evil.example'}, {'X-Forwarded-Host': 'evil.example'}],
)
def test_links_ignore_forged_host_headers(client, make_user, outbox, headers):
    make_user('susan')
    client.post('/reset_password_request', data={'email': 'susan@example.com'}, headers=headers)
    outbox.wait()
    links = links_in(outbox[0].body) + links_in(outbox[0].html)
    assert links and all(link.startswith('https://microblog.example.com/') for link in links)


def test_trusted_hosts_refuse_other_hosts(make_app):
    app = make_app(TRUSTED_HOSTS=['microblog.example.com'])
    client = app.test_client()
    assert client.get('/login').status_code == 200
    forged = client.post(
        '/reset_password_request', data={'email': 'a@example.com'}, headers={'Host': 'evil.example'}
    )
    assert forged.status_code == 400


def test_the_token_leaves_the_url(client, make_user):
    token = make_user('susan').get_reset_password_token()
    response = open_link(client, token)
    assert token not in response.headers['Location']
    page = client.get(response.headers['Location'])
    assert token not in page.text


@pytest.mark.parametrize('path', ['/reset_password_request', '/reset_password'])
def test_reset_pages_are_private(client, make_user, path):
    open_link(client, make_user('susan').get_reset_password_token())
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers['Referrer-Policy'] == 'same-origin'
    assert response.headers['Cache-Control'] == 'no-store'
    for url in re.findall(r'(?:src|href|action)="([^"]+)"', response.text):
        assert not url.startswith(('http:', 'https:', '//')), url


PAGES = [
    '/login',
    '/register',
    '/reset_password_request',
    '/index',
    '/explore',
    '/user/susan',
    '/edit_profile',
    '/logout',
    '/no-such-page',
]


@pytest.mark.parametrize('path', PAGES)
def test_security_headers_on_every_page(client, make_user, auth, path):
    make_user('susan')
    if path not in ('/login', '/register', '/reset_password_request'):
        auth.login()
    response = client.get(path)
    assert response.headers['X-Content-Type-Options'] == 'nosniff'
    assert response.headers['X-Frame-Options'] == 'DENY'
    policy = response.headers['Content-Security-Policy']
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert 'unsafe-inline' not in policy
    # The page satisfies its policy: no inline script or style.
    assert '<script' not in response.text
    assert '<style' not in response.text
    assert ' style="' not in response.text


def test_cookies_are_httponly_lax_and_secure_outside_debug(make_app, make_user):
    app = make_app(SESSION_COOKIE_SECURE=None, REMEMBER_COOKIE_SECURE=None)
    assert app.config['SESSION_COOKIE_SECURE'] is True
    with app.app_context():
        make_user('susan')
    client = app.test_client()
    response = client.post(
        '/login', data={'username': 'susan', 'password': PASSWORD, 'remember_me': 'y'}
    )
    cookies = {header.split('=', 1)[0]: header for header in response.headers.getlist('Set-Cookie')}
    for name in ('session', 'remember_token'):
        assert '; HttpOnly' in cookies[name]
        assert '; SameSite=Lax' in cookies[name]
        assert '; Secure' in cookies[name]


def test_debug_mode_allows_cookies_over_http(make_app):
    app = make_app(DEBUG=True, SESSION_COOKIE_SECURE=None)
    assert app.config['SESSION_COOKIE_SECURE'] is False


# Accounts and sessions


def test_a_reset_logs_out_every_session_and_remember_cookie(make_app):
    app = make_app()
    with app.app_context():
        user = add_susan()
        token = user.get_reset_password_token()
    logged_in = app.test_client()
    logged_in.post('/login', data={'username': 'susan', 'password': PASSWORD})
    remembered = app.test_client()
    remembered.post('/login', data={'username': 'susan', 'password': PASSWORD, 'remember_me': 'y'})
    remember_cookie = remembered.get_cookie('remember_token', domain='microblog.example.com')
    only_cookie = app.test_client()
    only_cookie.set_cookie('remember_token', remember_cookie.value, domain='microblog.example.com')
    assert only_cookie.get('/index').status_code == 200  # the cookie alone logs in

    resetter = app.test_client()
    assert reset_with(resetter, token).headers['Location'] == '/login'
    assert resetter.get('/index').status_code == 302  # not logged in automatically
    fresh_cookie_only = app.test_client()
    fresh_cookie_only.set_cookie(
        'remember_token', remember_cookie.value, domain='microblog.example.com'
    )
    for client in (logged_in, remembered, fresh_cookie_only):
        assert client.get('/index').status_code == 302


def test_the_owner_is_told_the_password_changed(client, make_user, outbox):
    token = make_user('susan').get_reset_password_token()
    reset_with(client, token)
    outbox.wait()
    notice = [m for m in outbox if m.subject == '[Microblog] Your password was changed']
    assert len(notice) == 1
    assert notice[0].recipients == ['susan@example.com']
    for body in (notice[0].body, notice[0].html):
        assert 'If it was not you' in body or 'If it was not you' in body.replace('<strong>', '')
        assert 'https://microblog.example.com/reset_password_request' in body


PASSWORD_CASES = [
    ('short1!', 'Use at least 8 characters.'),
    ('x' * 129, 'Use at most 128 characters.'),
    ('susan-the-user', None),
    ('RiverStone', 'Your password cannot be your username or email address.'),
    ('password123', 'common password'),
    ('qwertyuiop', 'This is a top-100 common password.'),
    ('letmein123', 'similar to a commonly used password'),
]


@pytest.mark.parametrize(('password', 'message'), PASSWORD_CASES)
def test_password_rules_on_register(client, password, message):
    response = client.post(
        '/register',
        data={
            'username': 'riverstone',
            'email': 'riverstone@example.com',
            'password': password,
            'password2': password,
        },
    )
    if message is None:
        assert response.status_code == 302
    else:
        assert message.lower() in response.text.lower()


@pytest.mark.parametrize(('password', 'message'), PASSWORD_CASES)
def test_password_rules_on_reset(client, make_user, password, message):
    user = make_user('riverstone')
    open_link(client, user.get_reset_password_token())
    response = set_password(client, password)
    if message is None:
        assert response.headers['Location'] == '/login'
    else:
        assert message.lower() in response.text.lower()


def test_the_email_address_is_not_a_password(client):
    response = client.post(
        '/register',
        data={
            'username': 'someone',
            'email': 'river.stone@example.com',
            'password': 'River.Stone@example.com',
            'password2': 'River.Stone@example.com',
        },
    )
    assert 'cannot be your username or email address' in response.text


def test_long_passwords_are_kept_whole(client, make_user):
    long_password = 'Lantern-' * 12 + 'meadow-quiet'
    assert len(long_password) > 100
    user = make_user('susan')
    reset_with(client, user.get_reset_password_token(), long_password)
    assert (
        client.post('/login', data={'username': 'susan', 'password': long_password}).status_code
        == 302
    )
    client.post('/logout')
    truncated = client.post('/login', data={'username': 'susan', 'password': long_password[:72]})
    assert 'Invalid username or password' in truncated.text


# Abuse


def client_from(app, address):
    client = app.test_client()
    client.environ_base['REMOTE_ADDR'] = address
    return client


@pytest.fixture
def limited_app(make_app):
    """An app with rate limits on and small, quick limits."""
    return make_app(
        RATELIMIT_ENABLED=True,
        RATELIMIT_RESET_PER_ADDRESS='5 per hour',
        RATELIMIT_RESET_PER_EMAIL='2 per hour',
        RATELIMIT_LOGIN_PER_ADDRESS='8 per minute',
        RATELIMIT_LOGIN_PER_USERNAME='3 per minute',
    )


def test_reset_requests_per_address_get_a_429_page(limited_app):
    client = limited_app.test_client()
    answers = [
        client.post('/reset_password_request', data={'email': f'n{i}@example.com'}).status_code
        for i in range(7)
    ]
    assert answers == [302] * 5 + [429] * 2
    page = client.post('/reset_password_request', data={'email': 'x@example.com'})
    assert 'Too many requests' in page.text


def test_reset_emails_per_address_are_limited_silently(limited_app):
    with limited_app.app_context():
        add_susan()
    from app import mail

    with mail.record_messages() as outbox:
        responses = []
        for number in range(4):
            client = client_from(limited_app, f'10.0.0.{number}')
            response = client.post('/reset_password_request', data={'email': 'susan@example.com'})
            responses.append((response.status_code, response.headers['Location']))
        limited_app.extensions['mail_delivery'].flush()
    assert responses == [(302, '/login')] * 4
    assert len(outbox) == 2


def test_failed_logins_per_username_are_limited(limited_app):
    with limited_app.app_context():
        add_susan()
    answers = []
    for number in range(5):
        client = client_from(limited_app, f'10.0.1.{number}')
        answers.append(
            client.post('/login', data={'username': 'susan', 'password': 'wrong-guess'}).status_code
        )
    assert answers == [200, 200, 200, 429, 429]


def test_successful_logins_do_not_count_against_the_username(limited_app):
    with limited_app.app_context():
        add_susan()
    for number in range(5):
        client = client_from(limited_app, f'10.0.2.{number}')
        response = client.post('/login', data={'username': 'susan', 'password': PASSWORD})
        assert response.status_code == 302


def test_logins_per_address_are_limited(limited_app):
    client = limited_app.test_client()
    answers = [
        client.post('/login', data={'username': f'user{i}', 'password': 'x'}).status_code
        for i in range(10)
    ]
    assert answers == [200] * 8 + [429] * 2


def test_behind_a_proxy_limits_count_the_forwarded_address(make_app, outbox):
    app = make_app(RATELIMIT_ENABLED=True, RATELIMIT_RESET_PER_ADDRESS='1 per hour', PROXY_COUNT=1)
    client = app.test_client()

    def ask(forwarded_for):
        headers = {'X-Forwarded-For': forwarded_for, 'X-Forwarded-Host': 'evil.example'}
        data = {'email': 'someone@example.com'}
        return client.post('/reset_password_request', data=data, headers=headers).status_code

    assert [ask('203.0.113.1'), ask('203.0.113.2'), ask('203.0.113.1')] == [302, 302, 429]


def test_limits_can_be_switched_off(make_app):
    app = make_app(RATELIMIT_ENABLED=False, RATELIMIT_RESET_PER_ADDRESS='1 per hour')
    client = app.test_client()
    for number in range(5):
        response = client.post('/reset_password_request', data={'email': f'n{number}@example.com'})
        assert response.status_code == 302


def test_redis_storage_holds_limits_across_processes(make_app):
    if not TEST_REDIS_URL:
        pytest.skip('TEST_REDIS_URL is not set: the shared rate-limit test needs Redis')
    import uuid

    from redis import Redis

    Redis.from_url(TEST_REDIS_URL).flushdb()
    settings = {
        'RATELIMIT_ENABLED': True,
        'RATELIMIT_STORAGE_URI': TEST_REDIS_URL,
        'RATELIMIT_LOGIN_PER_ADDRESS': '3 per minute',
        'RATELIMIT_KEY_PREFIX': uuid.uuid4().hex,
    }
    first = make_app(**settings)
    second = make_app(create_tables=False, **settings)
    answers = []
    for instance in (first, first, second, second):
        response = instance.test_client().post('/login', data={'username': 'x', 'password': 'y'})
        answers.append(response.status_code)
    assert answers == [200, 200, 200, 429]


def count_statements(app):
    statements = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(re.sub(r'\s+', ' ', statement))

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, 'before_cursor_execute', record)
    return statements, lambda: sa.event.remove(engine, 'before_cursor_execute', record)


def test_reset_request_does_the_same_work_for_known_and_unknown(make_app):
    app = make_app(MAIL_QUEUE='none')
    with app.app_context():
        add_susan()
    results = {}
    for address in ('susan@example.com', 'nobody@example.com'):
        client = app.test_client()
        statements, stop = count_statements(app)
        response = client.post('/reset_password_request', data={'email': address})
        stop()
        page = client.get('/login')
        results[address] = (
            response.status_code,
            response.headers['Location'],
            statements,
            page.text,
        )
    assert results['susan@example.com'] == results['nobody@example.com']


def test_login_with_an_unknown_user_checks_a_hash_too(client, make_user, monkeypatch):
    make_user('susan')
    calls = []
    original = app.security.check_password_hash

    def counting(pwhash, password):
        calls.append(pwhash)
        return original(pwhash, password)

    monkeypatch.setattr(app.security, 'check_password_hash', counting)
    monkeypatch.setattr('app.models.check_password_hash', counting)
    client.post('/login', data={'username': 'nobody', 'password': 'wrong-password'})
    unknown = list(calls)
    calls.clear()
    client.post('/login', data={'username': 'susan', 'password': 'wrong-password'})
    assert len(unknown) == len(calls) == 1
    assert unknown[0].split('$')[0] == calls[0].split('$')[0]  # the same method and cost


def test_registration_says_no_more_than_it_must(client, make_user):
    make_user('susan', email='susan@example.com')
    response = client.post(
        '/register',
        data={
            'username': 'newcomer',
            'email': 'susan@example.com',
            'password': PASSWORD,
            'password2': PASSWORD,
        },
    )
    assert 'Please use a different email address.' in response.text
    assert 'susan' not in response.text.replace('susan@example.com', '')
