"""A reset flow that cannot be abused (issue 7): tokens, links, pages, sessions, passwords, limits.

Each test is one behaviour the issue asks for, and fails without it.
"""

import hashlib
import json
import logging
import re
import threading
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import jwt
import pytest
import sqlalchemy as sa
from werkzeug.security import generate_password_hash

from app import db, mailer
from app import security as app_security
from app.models import User, utcnow
from app.security import password_problems
from config import Config
from tests.helpers import PASSWORD, TEST_REDIS_URL, links_in, recorded_statements

NEW_PASSWORD = 'quiet-Meadow-lantern-42'
INVALID_LINK = 'This reset link is invalid or has expired.'
RESET_DONE = 'Your password has been reset.'
CHECK_EMAIL = 'Check your email for the instructions to reset your password'
CHANGED_SUBJECT = '[Microblog] Your password was changed'
TEST_KEY = 'test-secret-key-that-is-at-least-32-bytes-long'
OLD_KEY = 'old-secret-key-that-is-at-least-32-bytes-long!'
NEW_KEY = 'new-secret-key-that-is-at-least-32-bytes-long!'
SITE = 'microblog.example.com'
TEMPLATES = Path(__file__).resolve().parents[1] / 'app' / 'templates'


def open_link(client, token):
    return client.get(f'/reset_password/{token}')


def set_password(client, password=NEW_PASSWORD):
    return client.post('/reset_password', data={'password': password, 'password2': password})


def reset_with(client, token, password=NEW_PASSWORD):
    assert open_link(client, token).headers['Location'] == '/reset_password'
    return set_password(client, password)


def log_in(client, username='susan', password=PASSWORD, remember=False):
    data = {'username': username, 'password': password}
    if remember:
        data['remember_me'] = 'y'
    return client.post('/login', data=data)


def add_susan():
    """Create the account the tests aim at, in the current app context."""
    user = User(username='susan', email='susan@example.com')
    user.set_password(PASSWORD)
    db.session.add(user)
    db.session.commit()
    return user


def susan():
    return db.session.scalar(sa.select(User).where(User.username == 'susan'))


def reset_links(message):
    return [link for link in links_in(message.body) if '/reset_password/' in link]


# Tokens


def test_a_link_works_once_and_takes_every_other_link_with_it(client, make_user):
    user = make_user('susan')
    first, second = user.get_reset_password_token(), user.get_reset_password_token(300)
    assert reset_with(client, first).headers['Location'] == '/login'
    for token in (first, second):
        assert User.verify_reset_password_token(token) is None
        assert open_link(client, token).headers['Location'] == '/reset_password_request'
        assert INVALID_LINK in client.get('/reset_password_request').text
    assert susan().check_password(NEW_PASSWORD)


def test_any_password_change_kills_outstanding_links(client, make_user):
    user = make_user('susan')
    token = user.get_reset_password_token()
    assert User.verify_reset_password_token(token) == user
    user.set_password('amber-Harbour-lantern-17')
    db.session.commit()
    assert User.verify_reset_password_token(token) is None
    assert open_link(client, token).headers['Location'] == '/reset_password_request'


@pytest.mark.sqlite_only
def test_the_payload_holds_nothing_secret(app, make_user, monkeypatch):
    user = make_user('susan')
    token = user.get_reset_password_token()
    assert jwt.get_unverified_header(token)['alg'] == 'HS256'
    payload = jwt.decode(token, options={'verify_signature': False})
    assert set(payload) == {'reset_password', 'state', 'iat', 'exp'}
    assert payload['reset_password'] == user.id
    assert payload['exp'] - payload['iat'] == 600
    method, salt, digest = user.password_hash.split('$')
    readable = json.dumps(payload)
    for secret in (user.password_hash, salt, digest, digest[:16], salt[:8]):
        assert secret not in readable
    # The state is a fingerprint keyed with SECRET_KEY: not the hash, nor a plain digest
    # of it that anyone holding a leaked hash could recompute.
    assert payload['state'] == user.reset_state()
    assert payload['state'] != hashlib.sha256(user.password_hash.encode()).hexdigest()[:32]
    monkeypatch.setitem(app.config, 'SECRET_KEY', NEW_KEY)
    assert user.reset_state() != payload['state']


def _signed(key, **claims):
    now = utcnow()
    return jwt.encode({'iat': now, 'exp': now + timedelta(minutes=10), **claims}, key, 'HS256')


FOREIGN_TOKENS = {
    'another purpose': lambda user: _signed(TEST_KEY, confirm=user.id),
    'another purpose, same state': lambda user: _signed(
        TEST_KEY, confirm=user.id, state=user.reset_state()
    ),
    'another key': lambda user: _signed(OLD_KEY, reset_password=user.id, state=user.reset_state()),
    'unsigned': lambda user: jwt.encode(
        {'reset_password': user.id, 'state': user.reset_state()}, None, 'none'
    ),
}


@pytest.mark.sqlite_only
@pytest.mark.parametrize('kind', FOREIGN_TOKENS)
def test_tokens_of_another_purpose_or_key_are_refused(client, make_user, kind):
    token = FOREIGN_TOKENS[kind](make_user('susan'))
    assert User.verify_reset_password_token(token) is None
    assert open_link(client, token).headers['Location'] == '/reset_password_request'


def signed_in_under_old_key(make_app):
    """Susan signed in on the site while its key was OLD_KEY: that app, and her cookie."""
    old_app = make_app(SECRET_KEY=OLD_KEY)
    with old_app.app_context():
        add_susan()
    old_client = old_app.test_client()
    assert log_in(old_client).status_code == 302
    old_client.get('/index')  # a page that writes what the session holds (a CSRF token)
    return old_app, old_client.get_cookie('session', domain=SITE)


@pytest.mark.sqlite_only
def test_key_rotation_keeps_links_and_sessions(make_app):
    old_app, session_cookie = signed_in_under_old_key(make_app)
    with old_app.app_context():
        old_token = susan().get_reset_password_token()  # after the login, which ends older links

    rotated = make_app(create_tables=False, SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=[OLD_KEY])
    with rotated.app_context():
        assert User.verify_reset_password_token(old_token) == susan()
        new_token = susan().get_reset_password_token()
    # New links are signed with the new key alone.
    jwt.decode(new_token, NEW_KEY, algorithms=['HS256'])
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(new_token, OLD_KEY, algorithms=['HS256'])

    client = rotated.test_client()
    client.set_cookie('session', session_cookie.value, domain=SITE)
    assert client.get('/index').status_code == 200  # still logged in
    carried_on = client.get_cookie('session', domain=SITE).value
    assert carried_on != session_cookie.value  # signed again, with the new key
    client = rotated.test_client()
    assert open_link(client, old_token).headers['Location'] == '/reset_password'

    # Once the old key is dropped, its links and sessions are worthless; the sessions
    # used during the rotation carried on under the new key.
    unrotated = make_app(create_tables=False, SECRET_KEY=NEW_KEY)
    with unrotated.app_context():
        assert User.verify_reset_password_token(old_token) is None
        assert User.verify_reset_password_token(new_token) == susan()
    for value, status in ((session_cookie.value, 302), (carried_on, 200)):
        client = unrotated.test_client()
        client.set_cookie('session', value, domain=SITE)
        assert client.get('/index').status_code == status


@pytest.mark.sqlite_only
def test_during_a_rotation_only_a_cookie_under_an_old_key_is_sent_again(make_app):
    under_old_key = signed_in_under_old_key(make_app)[1].value

    rotated = make_app(create_tables=False, SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=[OLD_KEY])
    client = rotated.test_client()
    client.set_cookie('session', under_old_key, domain=SITE)
    assert 'Set-Cookie' in client.get('/index').headers  # signed again, under the new key
    # Under the new key already, it is not sent with every page for the rest of the rotation.
    assert 'Set-Cookie' not in client.get('/index').headers


@pytest.mark.sqlite_only
def test_key_rotation_keeps_remembered_sessions(make_app):
    old_app = make_app(SECRET_KEY=OLD_KEY)
    with old_app.app_context():
        add_susan()
    remembered = old_app.test_client()
    log_in(remembered, remember=True)
    remember = remembered.get_cookie('session', domain=SITE)

    rotated = make_app(create_tables=False, SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=[OLD_KEY])
    client = rotated.test_client()
    client.set_cookie('session', remember.value, domain=SITE)
    assert client.get('/index').status_code == 200
    reissued = client.get_cookie('session', domain=SITE)
    assert reissued.value != remember.value  # signed again, with the new key
    assert reissued.expires is not None  # and still remembered

    unrotated = make_app(create_tables=False, SECRET_KEY=NEW_KEY)
    for value, status in ((remember.value, 302), (reissued.value, 200)):
        client = unrotated.test_client()
        client.set_cookie('session', value, domain=SITE)
        assert client.get('/index').status_code == status


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    ('ttl', 'words'), [(600, '10 minutes'), (3600, '1 hour'), (90, '90 seconds')]
)
def test_the_email_says_how_long_the_link_is_valid(make_app, ttl, words):
    app = make_app(RESET_PASSWORD_TOKEN_TTL=ttl)
    with app.app_context():
        add_susan()
    with mailer.record_messages() as sent:
        app.test_client().post('/reset_password_request', data={'email': 'susan@example.com'})
        app.extensions['mail_delivery'].flush()
    [message] = sent
    for body in (message.body, message.html):
        assert f'valid for {words}' in body
    token = reset_links(message)[0].rsplit('/', 1)[1]
    payload = jwt.decode(token, options={'verify_signature': False})
    assert payload['exp'] - payload['iat'] == ttl


def submit_at_once(clients, passwords):
    """POST the reset form from every client at the same moment; the responses in order."""
    barrier = threading.Barrier(len(clients))
    responses = [None] * len(clients)

    def submit(number):
        barrier.wait(10)
        responses[number] = set_password(clients[number], passwords[number])

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    return responses


@pytest.mark.parametrize('round_number', range(3))
def test_two_submissions_of_one_link_at_once_change_the_password_once(make_app, round_number):
    app = make_app()
    with app.app_context():
        token = add_susan().get_reset_password_token()
    clients = [app.test_client() for _ in range(2)]
    for client in clients:
        assert open_link(client, token).headers['Location'] == '/reset_password'
    passwords = ['amber-Harbour-lantern-17', 'cobalt-Meadow-kettle-23']
    with mailer.record_messages() as sent:
        responses = submit_at_once(clients, passwords)
        app.extensions['mail_delivery'].flush()
    locations = [response.headers['Location'] for response in responses]
    assert sorted(locations) == ['/login', '/reset_password_request']
    pages = [client.get(location).text for client, location in zip(clients, locations, strict=True)]
    assert sum(RESET_DONE in page for page in pages) == 1
    assert [m.subject for m in sent] == [CHANGED_SUBJECT]
    winner = passwords[locations.index('/login')]
    with app.app_context():
        assert susan().check_password(winner)


# Links and pages


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    ('headers', 'settings'),
    [
        ({'Host': 'evil.example'}, {}),
        ({'X-Forwarded-Host': 'evil.example'}, {}),
        ({'Host': 'evil.example:8443', 'X-Forwarded-Proto': 'http'}, {}),
        ({'X-Forwarded-Host': 'evil.example', 'X-Forwarded-Proto': 'http'}, {'PROXY_COUNT': 1}),
    ],
)
def test_links_ignore_forged_host_headers(make_app, headers, settings):
    app = make_app(**settings)
    with app.app_context():
        add_susan()
    with mailer.record_messages() as sent:
        response = app.test_client().post(
            '/reset_password_request', data={'email': 'susan@example.com'}, headers=headers
        )
        app.extensions['mail_delivery'].flush()
    assert response.status_code == 302
    [message] = sent
    links = links_in(message.body) + links_in(message.html)
    assert reset_links(message)
    assert all(link.startswith(f'https://{SITE}/') for link in links), links


@pytest.mark.sqlite_only
def test_trusted_hosts_refuse_other_hosts(make_app):
    app = make_app(TRUSTED_HOSTS=[SITE])
    client = app.test_client()
    assert client.get('/login').status_code == 200
    data = {'email': 'susan@example.com'}
    forged = client.post('/reset_password_request', data=data, headers={'Host': 'evil.example'})
    assert forged.status_code == 400


@pytest.mark.sqlite_only
def test_the_token_leaves_the_url(client, make_user):
    token = make_user('susan').get_reset_password_token()
    response = open_link(client, token)
    assert response.headers['Location'] == '/reset_password'
    page = client.get('/reset_password')
    assert page.status_code == 200
    assert token not in page.text


def reset_pages(client, token):
    """The responses that show or carry a reset token, and the request page."""
    return {
        'link': open_link(client, token),
        'form': client.get('/reset_password'),
        'request': client.get('/reset_password_request'),
        'errors': set_password(client, 'short'),
    }


@pytest.mark.sqlite_only
def test_reset_pages_are_private_and_load_nothing_from_elsewhere(client, make_user):
    pages = reset_pages(client, make_user('susan').get_reset_password_token())
    for name, response in pages.items():
        assert response.headers['Referrer-Policy'] == 'same-origin', name
        assert response.headers['Cache-Control'] == 'no-store', name
        urls = re.findall(r'(?:src|href|action)\s*=\s*["\']?([^"\'\s>]+)', response.text)
        for url in urls:
            assert urlsplit(url).netloc in ('', SITE), (name, url)
    assert pages['form'].status_code == pages['errors'].status_code == 200


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


def satisfies_csp(html):
    """Whether a page needs no 'unsafe-inline': no inline script, style or event handler."""
    inline_script = re.search(r'<script(?![^>]*\bsrc=)[^>]*>', html, re.IGNORECASE)
    inline_style = re.search(r'<style\b|\sstyle\s*=', html, re.IGNORECASE)
    handler = re.search(r'\son[a-z]+\s*=', html, re.IGNORECASE)
    javascript_url = re.search(r'javascript:', html, re.IGNORECASE)
    return not (inline_script or inline_style or handler or javascript_url)


def assert_security_headers(response):
    headers = response.headers
    assert headers['X-Content-Type-Options'] == 'nosniff'
    policy = headers['Content-Security-Policy']
    assert headers.get('X-Frame-Options') == 'DENY' or "frame-ancestors 'none'" in policy
    assert "default-src 'self'" in policy
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    assert 'unsafe-inline' not in policy and 'unsafe-eval' not in policy


@pytest.mark.sqlite_only
@pytest.mark.parametrize('path', PAGES)
def test_security_headers_on_every_page(client, make_user, auth, path):
    make_user('susan')
    if path not in ('/login', '/register', '/reset_password_request'):
        auth.login()
        client.post('/index', data={'post': 'a post with <b>markup</b> and a "quote"'})
    response = client.get(path)
    assert response.status_code in (200, 404)
    assert_security_headers(response)
    assert satisfies_csp(response.text)


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    ('avatars', 'images'),
    [('local', "img-src 'self'"), ('gravatar', "img-src 'self' https://www.gravatar.com")],
)
def test_pages_may_load_images_from_the_site_and_gravatar_only_if_asked_for(
    make_app, avatars, images
):
    response = make_app(AVATARS=avatars).test_client().get('/login')
    assert images in response.headers['Content-Security-Policy'].split('; ')


@pytest.mark.sqlite_only
def test_error_pages_carry_the_headers_too(make_app):
    app = make_app(
        WTF_CSRF_ENABLED=True, RATELIMIT_ENABLED=True, RATELIMIT_LOGIN_PER_ADDRESS='1/hour'
    )
    client = app.test_client()
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', client.get('/login').text)
    data = {'username': 'x', 'password': 'y', 'csrf_token': token.group(1)}
    referer = {'Referer': f'https://{SITE}/login'}  # Flask-WTF checks it on HTTPS
    responses = [
        client.post('/reset_password_request', data={'email': 'a@example.com'}),  # no CSRF
        client.post('/login', data=data, headers=referer),
        client.post('/login', data=data, headers=referer),  # over the limit
        client.get('/reset_password/%00'),
        client.get('/no-such-page'),
    ]
    assert [response.status_code for response in responses] == [400, 200, 429, 400, 404]
    for response in responses:
        assert_security_headers(response)
        assert satisfies_csp(response.text)


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    ('secure_cookies', 'origin', 'explained'),
    [
        (True, f'http://{SITE}', True),  # the browser kept the HTTPS-only cookie to itself
        (True, f'https://{SITE}', False),  # a form left open too long: nothing to set
        (False, f'http://{SITE}', False),
    ],
)
def test_a_form_over_plain_http_says_what_to_set(make_app, secure_cookies, origin, explained):
    app = make_app(WTF_CSRF_ENABLED=True, SESSION_COOKIE_SECURE=secure_cookies)
    form = app.test_client().get('/login').text
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', form).group(1)
    # The form comes back without its session cookie, as when the browser is on http://.
    data = {'username': 'susan', 'password': 'x', 'csrf_token': token}
    response = app.test_client().post('/login', data=data, headers={'Origin': origin})
    assert response.status_code == 400
    assert 'The CSRF session token is missing.' in response.text
    assert ('set <code>PREFERRED_URL_SCHEME=http</code>' in response.text) is explained
    assert (f'href="https://{SITE}/"' in response.text) is explained


PAGE_TEMPLATES = sorted(
    path.relative_to(TEMPLATES).as_posix()
    for path in TEMPLATES.rglob('*.html')
    if path.relative_to(TEMPLATES).parts[0] != 'email'  # emails are not under the page CSP
)


@pytest.mark.sqlite_only
@pytest.mark.parametrize('name', PAGE_TEMPLATES)
def test_page_templates_need_no_inline_script_or_style(name):
    assert satisfies_csp((TEMPLATES / name).read_text())


@pytest.fixture
def production_app(make_app, tmp_path, monkeypatch):
    """Build an app as it runs in production: no debug, no testing, every check satisfied."""
    monkeypatch.chdir(tmp_path)
    logger = logging.getLogger('app')
    handlers = list(logger.handlers)

    def factory(**overrides):
        settings = {
            'TESTING': False,
            'DEBUG': False,
            'LOG_TO_STDOUT': True,
            'MAIL_SERVER': None,
            'SESSION_COOKIE_SECURE': None,
            **overrides,
        }
        return make_app(**settings)

    yield factory
    for handler in list(logger.handlers):
        if handler not in handlers:
            logger.removeHandler(handler)


def login_cookies(app):
    """The Set-Cookie headers of a remembered login, by cookie name."""
    with app.app_context():
        add_susan()
    response = log_in(app.test_client(), remember=True)
    assert response.status_code == 302
    return {header.split('=', 1)[0]: header for header in response.headers.getlist('Set-Cookie')}


@pytest.mark.sqlite_only
def test_cookies_are_httponly_lax_and_secure_in_production(production_app):
    app = production_app()
    assert not app.debug and not app.testing
    cookies = login_cookies(app)
    assert set(cookies) == {'session', 'login_device'}  # remembered or not, one session cookie
    for cookie in cookies.values():
        assert '; HttpOnly' in cookie
        assert '; Secure' in cookie
    assert '; SameSite=Lax' in cookies['session']
    assert '; SameSite=Strict' in cookies['login_device']  # sent to /login alone


@pytest.mark.sqlite_only
def test_debug_mode_sends_cookies_over_plain_http(make_app):
    development = make_app(
        DEBUG=True,
        SECRET_KEY=None,
        SERVER_NAME=None,
        PREFERRED_URL_SCHEME=None,
        SESSION_COOKIE_SECURE=None,
    )
    assert development.config['PREFERRED_URL_SCHEME'] == 'http'
    cookies = login_cookies(development)
    for cookie in cookies.values():
        assert '; HttpOnly' in cookie and '; Secure' not in cookie
    assert '; SameSite=Lax' in cookies['session']


# Accounts and sessions


def test_a_reset_logs_out_every_other_session_and_remember_cookie(make_app):
    app = make_app()
    with app.app_context():
        add_susan()
    logged_in = app.test_client()
    log_in(logged_in)
    remembered = app.test_client()
    log_in(remembered, remember=True)
    with app.app_context():
        token = susan().get_reset_password_token()
    remember_cookie = remembered.get_cookie('session', domain=SITE).value
    cookie_only = app.test_client()
    cookie_only.set_cookie('session', remember_cookie, domain=SITE)
    for client in (logged_in, remembered, cookie_only):
        assert client.get('/index').status_code == 200

    resetter = app.test_client()
    response = reset_with(resetter, token)
    assert response.headers['Location'] == '/login'
    assert RESET_DONE in resetter.get('/login').text
    assert resetter.get('/index').headers['Location'].startswith('/login')  # not logged in
    late_cookie = app.test_client()
    late_cookie.set_cookie('session', remember_cookie, domain=SITE)
    for client in (logged_in, remembered, cookie_only, late_cookie):
        assert client.get('/index').headers['Location'].startswith('/login')
    assert log_in(app.test_client(), password=NEW_PASSWORD).status_code == 302


@pytest.mark.sqlite_only
def test_the_owner_is_told_the_password_changed(client, make_user, outbox):
    token = make_user('susan').get_reset_password_token()
    reset_with(client, token)
    outbox.wait()
    [notice] = [m for m in outbox if m.subject == CHANGED_SUBJECT]
    assert notice.recipients == ['susan@example.com']
    assert notice.body and notice.html
    for body in (notice.body, re.sub(r'<[^>]+>', '', notice.html)):
        body = ' '.join(body.split())
        assert 'password of your Microblog account was just changed' in body
        assert 'If it was not you' in body
        assert 'Secure your email account first' in body
        assert f'https://{SITE}/reset_password_request' in body


LONG_PASSWORD = ('Lantern-meadow-' * 7)[:100]
COMMON_CASES = [
    ('too short', 'short1!', 'Use at least 8 characters.'),
    ('too long', ('Lantern-meadow-' * 9)[:129], 'Use at most 128 characters.'),
    ('the username', 'RiverStone', 'Your password cannot be your username or email address.'),
    (
        'the email',
        'RiverStone@Example.com',
        'Your password cannot be your username or email address.',
    ),
    ('common', 'password123', 'This is a very common password.'),
    ('keyboard row', 'qwertyuiop', 'This is a top-100 common password.'),
    ('100 characters', LONG_PASSWORD, None),
]
RESET_ONLY_CASES = [
    ('the old password', PASSWORD, 'Choose a password you have not used for this account.'),
]


@pytest.mark.parametrize(
    ('password', 'refused'),
    [
        ('Lantern-' * 1, False),  # 8 characters, the least allowed
        ('Lantern', True),
        (('Lantern-meadow-' * 9)[:128], False),  # 128 characters, the most allowed
        (('Lantern-meadow-' * 9)[:129], True),
    ],
)
def test_password_lengths_at_the_limits(password, refused):
    length_messages = {'Use at least 8 characters.', 'Use at most 128 characters.'}
    assert bool(set(password_problems(password)) & length_messages) is refused


def test_a_password_cannot_be_the_part_of_the_email_before_the_at_sign():
    problems = password_problems('Lantern-Meadow', 'bob', 'lantern-meadow@example.com')
    assert problems == ['Your password cannot be your username or email address.']
    assert password_problems('Lantern-Meadow-Quiet-42', 'bob', None) == []


@pytest.mark.parametrize(
    ('password', 'username', 'problems'),
    [
        # Strong alone, weak beside the username: zxcvbn is told the account's names.
        ('riverstone2024', None, []),
        (
            'riverstone2024',
            'riverstone',
            [
                'This password is too easy to guess. '
                'Add another word or two. Uncommon words are better.'
            ],
        ),
        ('correcthorse', None, []),  # score 2, the least accepted
        (
            'kjhgfdsaqw',
            None,
            [
                'This is similar to a commonly used password. Add another word or two. '
                "Uncommon words are better. Reversed words aren't much harder to guess."
            ],
        ),
    ],
)
def test_a_weak_password_gets_zxcvbns_warning_and_every_suggestion(password, username, problems):
    assert password_problems(password, username) == problems


def test_the_old_password_is_refused_with_its_own_message():
    old_hash = generate_password_hash(PASSWORD, method='pbkdf2:sha256:1')
    assert password_problems(PASSWORD, 'susan', 'susan@example.com', old_hash) == [
        'Choose a password you have not used for this account.'
    ]


def _cases(rows):
    return pytest.mark.parametrize(
        ('password', 'message'), [row[1:] for row in rows], ids=[row[0] for row in rows]
    )


def register(client, password, username='riverstone'):
    data = {
        'username': username,
        'email': f'{username}@example.com',
        'password': password,
        'password2': password,
    }
    return client.post('/register', data=data)


@pytest.mark.sqlite_only
@_cases(COMMON_CASES)
def test_password_rules_on_register(client, password, message):
    response = register(client, password)
    if message is None:
        assert response.headers['Location'] == '/login'
        assert log_in(client, 'riverstone', password).status_code == 302
    else:
        assert response.status_code == 200
        assert message in response.text
        assert db.session.scalar(sa.select(User)) is None


@pytest.mark.sqlite_only
def test_a_password_equal_to_a_username_unlike_the_email_is_refused_on_register(client):
    data = {
        'username': 'riverstone',
        'email': 'lantern@example.com',
        'password': 'RiverStone',
        'password2': 'RiverStone',
    }
    response = client.post('/register', data=data)
    assert response.status_code == 200
    assert 'Your password cannot be your username or email address.' in response.text
    assert db.session.scalar(sa.select(User)) is None


@pytest.mark.sqlite_only
@_cases(COMMON_CASES + RESET_ONLY_CASES)
def test_password_rules_on_reset(client, make_user, password, message):
    user = make_user('riverstone', password=PASSWORD)
    response = reset_with(client, user.get_reset_password_token(), password)
    if message is None:
        assert response.headers['Location'] == '/login'
    else:
        assert response.status_code == 200
        assert message in response.text
        assert user.check_password(PASSWORD)


@pytest.mark.sqlite_only
def test_a_password_equal_to_a_username_unlike_the_email_is_refused_on_reset(client, make_user):
    # The reset form has no username field: the rule reads the account's own name.
    user = make_user('riverstone', email='lantern@example.com', password=PASSWORD)
    response = reset_with(client, user.get_reset_password_token(), 'RiverStone')
    assert response.status_code == 200
    assert 'Your password cannot be your username or email address.' in response.text
    assert user.check_password(PASSWORD)


@pytest.mark.sqlite_only
@pytest.mark.parametrize('how', ['register', 'reset'])
def test_long_passwords_are_never_truncated(client, make_user, how):
    assert len(LONG_PASSWORD) == 100
    if how == 'register':
        assert register(client, LONG_PASSWORD, username='susan').status_code == 302
    else:
        reset_with(client, make_user('susan').get_reset_password_token(), LONG_PASSWORD)
    truncated = log_in(client, password=LONG_PASSWORD[:72])
    assert 'Invalid username or password' in truncated.text
    assert log_in(client, password=LONG_PASSWORD).status_code == 302


# Abuse


def client_from(app, address):
    client = app.test_client()
    client.environ_base['REMOTE_ADDR'] = address
    return client


TIGHT_LIMITS = {
    'RATELIMIT_RESET_PER_ADDRESS': '5 per hour',
    'RATELIMIT_RESET_PER_ADDRESS_AND_EMAIL': '2 per hour',
    'RATELIMIT_LOGIN_PER_ADDRESS': '8 per minute',
    'RATELIMIT_LOGIN_PER_ADDRESS_AND_USERNAME': '2 per minute',
    'RATELIMIT_LOGIN_PER_USERNAME': '3 per minute',
    'RATELIMIT_REGISTER_PER_ADDRESS': '3 per hour',
}


@pytest.fixture
def limited_app(make_app):
    """An app with rate limits on, and small ones."""
    return make_app(RATELIMIT_ENABLED=True, **TIGHT_LIMITS)


def assert_clean_429(response):
    assert response.status_code == 429
    assert 'Too many requests' in response.text
    assert 'Traceback' not in response.text and 'limit' not in response.text.lower()
    assert_security_headers(response)


@pytest.mark.sqlite_only
def test_reset_requests_per_address_get_a_429_page(limited_app):
    client = client_from(limited_app, '192.0.2.1')
    responses = [
        client.post('/reset_password_request', data={'email': f'n{number}@example.com'})
        for number in range(7)
    ]
    assert [response.status_code for response in responses] == [302] * 5 + [429] * 2
    assert_clean_429(responses[-1])
    other = client_from(limited_app, '192.0.2.2')
    assert other.post('/reset_password_request', data={'email': 'a@example.com'}).status_code == 302


@pytest.mark.sqlite_only
def test_reset_emails_per_address_and_target_are_limited_silently(limited_app):
    with limited_app.app_context():
        add_susan()
    seen = set()
    with mailer.record_messages() as sent:
        for _ in range(4):
            client = client_from(limited_app, '198.51.100.1')
            response = client.post('/reset_password_request', data={'email': 'susan@example.com'})
            flashed = re.findall(r'<p class="flash[^"]*"[^>]*>(.*?)</p>', client.get('/login').text)
            seen.add((response.status_code, response.headers['Location'], tuple(flashed)))
        limited_app.extensions['mail_delivery'].flush()
    assert seen == {(302, '/login', (CHECK_EMAIL,))}
    assert len(sent) == 2  # RATELIMIT_RESET_PER_ADDRESS_AND_EMAIL
    assert all(message.recipients == ['susan@example.com'] for message in sent)


@pytest.mark.sqlite_only
def test_logins_per_address_get_a_429_page(limited_app):
    client = client_from(limited_app, '192.0.2.3')
    responses = [log_in(client, f'user{number}', 'x') for number in range(10)]
    assert [response.status_code for response in responses] == [200] * 8 + [429] * 2
    assert_clean_429(responses[-1])


@pytest.mark.sqlite_only
def test_failed_logins_per_username_get_a_429_page(limited_app):
    with limited_app.app_context():
        add_susan()
    responses = [
        log_in(client_from(limited_app, f'203.0.113.{number}'), 'susan', 'wrong-guess')
        for number in range(5)
    ]
    assert [response.status_code for response in responses] == [200, 200, 200, 429, 429]
    assert_clean_429(responses[-1])
    # The limit is on the username, whatever its case or spacing.
    assert log_in(client_from(limited_app, '203.0.113.9'), ' SUSAN ', 'x').status_code == 429


@pytest.mark.sqlite_only
def test_successful_logins_do_not_count_against_the_username(limited_app):
    with limited_app.app_context():
        add_susan()
    for number in range(5):
        assert log_in(client_from(limited_app, f'203.0.113.{number}')).status_code == 302


@pytest.mark.sqlite_only
def test_rate_limits_can_all_be_switched_off(make_app):
    app = make_app(RATELIMIT_ENABLED=False, **TIGHT_LIMITS)
    with app.app_context():
        add_susan()
    client = client_from(app, '192.0.2.4')
    statuses = set()
    with mailer.record_messages() as sent:
        for _ in range(10):
            reset = client.post('/reset_password_request', data={'email': 'susan@example.com'})
            statuses.add(reset.status_code)
        app.extensions['mail_delivery'].flush()
    assert len(sent) == 10  # per target email: off
    for number in range(10):
        statuses.add(log_in(client, 'susan', 'wrong-guess').status_code)
        statuses.add(register(client, 'x', username=f'user{number}').status_code)
    assert 429 not in statuses


@pytest.mark.sqlite_only
def test_limits_in_redis_hold_across_app_instances(make_app):
    if not TEST_REDIS_URL:
        pytest.skip('TEST_REDIS_URL is not set: sharing limits between instances needs Redis')
    from redis import Redis

    Redis.from_url(TEST_REDIS_URL).flushdb()
    settings = {
        'RATELIMIT_ENABLED': True,
        'RATELIMIT_STORAGE_URI': TEST_REDIS_URL,
        'RATELIMIT_LOGIN_PER_ADDRESS': '3 per minute',
        'RATELIMIT_RESET_PER_ADDRESS_AND_EMAIL': '2 per hour',
    }
    # Each make_app binds the shared limiter to a new storage object: with memory://
    # the second instance would start from zero, as a second process does.
    first = make_app(**settings)
    username = f'user-{uuid.uuid4().hex}'
    answers = [log_in(first.test_client(), username, 'x').status_code for _ in range(2)]
    target = f'{uuid.uuid4().hex}@example.com'
    with first.app_context():
        db.session.add(User(username=username, email=target))
        db.session.commit()
    with mailer.record_messages() as sent:
        for _ in range(2):
            client_from(first, '192.0.2.1').post('/reset_password_request', data={'email': target})
        first.extensions['mail_delivery'].flush()
        second = make_app(create_tables=False, **settings)
        answers += [log_in(second.test_client(), username, 'x').status_code for _ in range(2)]
        for _ in range(2):
            client_from(second, '192.0.2.1').post('/reset_password_request', data={'email': target})
        second.extensions['mail_delivery'].flush()
    assert answers == [200, 200, 200, 429]
    assert len(sent) == 2


def comparable_headers(response):
    """The headers, with Date and the values of cookies left out."""
    headers = []
    for name, value in response.headers.items():
        if name == 'Date':
            continue
        if name == 'Set-Cookie':
            value = re.sub(r'^([^=]+)=[^;]*', r'\1=…', value)
        headers.append((name, value))
    return sorted(headers)


@pytest.mark.sqlite_only
@pytest.mark.parametrize('limits', [False, True], ids=['limits off', 'limits on'])
def test_reset_request_answers_and_works_alike_for_known_and_unknown(make_app, limits):
    app = make_app(MAIL_QUEUE='none', RATELIMIT_ENABLED=limits)
    with app.app_context():
        add_susan()
    seen = {}
    for address in ('susan@example.com', 'nobody@example.com'):
        client = app.test_client()
        with recorded_statements(app) as statements:
            response = client.post('/reset_password_request', data={'email': address})
        page = client.get(response.headers['Location'])
        seen[address] = {
            'status': response.status_code,
            'headers': comparable_headers(response),
            'body': response.text,
            'page': page.text,
            'statements': statements,
        }
    known, unknown = seen['susan@example.com'], seen['nobody@example.com']
    assert known['statements'], 'the request stores something'
    assert len(known['statements']) == len(unknown['statements'])
    assert known == unknown
    assert CHECK_EMAIL in known['page']


@pytest.mark.sqlite_only
def test_login_with_an_unknown_user_checks_a_hash_too(app, client, make_user, monkeypatch):
    # The production method: what the two answers cost is what this test is about.
    app.config['PASSWORD_HASH_METHOD'] = Config.PASSWORD_HASH_METHOD
    make_user('susan')
    calls = []
    original = app_security.check_password_hash

    def counting(pwhash, password):
        calls.append(pwhash)
        return original(pwhash, password)

    monkeypatch.setattr(app_security, 'check_password_hash', counting)
    monkeypatch.setattr('app.models.check_password_hash', counting)
    unknown_page = log_in(client, 'nobody', 'wrong-password')
    unknown = list(calls)
    calls.clear()
    wrong_page = log_in(client, 'susan', 'wrong-password')
    assert len(unknown) == len(calls) == 1
    # The dummy hash costs what a real one does: same method, same parameters.
    assert unknown[0].split('$')[0] == calls[0].split('$')[0]
    assert calls[0].startswith('scrypt:')
    assert unknown_page.status_code == wrong_page.status_code == 200
    assert unknown_page.text.replace('nobody', 'susan') == wrong_page.text


@pytest.mark.sqlite_only
def test_registration_says_no_more_than_it_must(client, make_user):
    make_user('susan', email='susan@example.com')
    typed = 'Hidden-Lantern-Word-93'
    data = {'password': typed, 'password2': typed}
    answers = []
    for username, email in (('newcomer', 'SUSAN@example.com'), ('other', 'other@example.com')):
        response = client.post('/register', data={'username': username, 'email': email, **data})
        assert response.status_code == 302
        page = client.get(response.headers['Location']).text
        answers.append((response.headers['Location'], page.replace(email, 'ADDRESS')))
    # An address with an account gets the answer a new one gets.
    assert answers[0] == answers[1]
    taken_name = client.post(
        '/register', data={**data, 'username': 'Susan', 'email': 'third@example.com'}
    )
    errors = re.findall(r'<p class="error"[^>]*>(.*?)</p>', taken_name.text)
    assert errors == ['Please use a different username.']
    text = taken_name.text.lower()
    assert typed.lower() not in text  # the password is never sent back
    for word in ('already', 'exists', 'registered to', 'belongs'):
        assert word not in text


@pytest.mark.sqlite_only
def test_registration_attempts_are_limited_per_address(limited_app):
    client = client_from(limited_app, '192.0.2.5')
    statuses = [register(client, 'x', username=f'user{n}').status_code for n in range(5)]
    assert statuses == [200, 200, 200, 429, 429]


@pytest.mark.sqlite_only
def test_passwords_are_hashed_with_scrypt_unless_set_otherwise(make_app, make_user):
    from config import Config

    assert Config.PASSWORD_HASH_METHOD == 'scrypt'
    app = make_app(PASSWORD_HASH_METHOD=Config.PASSWORD_HASH_METHOD)
    with app.app_context():
        user = User(username='hashed', email='hashed@example.com')
        user.set_password(PASSWORD)
        assert user.password_hash.startswith('scrypt:32768:8:1$')
        assert user.check_password(PASSWORD)
        # A hash made by the cheaper method still checks after the setting changes.
        app.config['PASSWORD_HASH_METHOD'] = 'pbkdf2:sha256:1000'
        assert user.check_password(PASSWORD)
        user.set_password(PASSWORD)
        assert user.password_hash.startswith('pbkdf2:sha256:1000$')


@pytest.mark.sqlite_only
@pytest.mark.parametrize('method', ['bcrypt', 'pbkdf2:nope:5', 'scrypt:a', 'pbkdf2:sha256:0'])
def test_an_unknown_hash_method_stops_the_app_at_start(make_app, method):
    from config import ConfigError

    with pytest.raises(ConfigError, match='PASSWORD_HASH_METHOD'):
        make_app(PASSWORD_HASH_METHOD=method)
