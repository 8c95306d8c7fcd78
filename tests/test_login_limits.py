"""Limits slow the attacker and never lock the owner out (issue 11, findings 1 and 10).

Every test runs with the limits counted in memory, and again in Redis when
TEST_REDIS_URL is set; and on SQLite, and again on PostgreSQL with TEST_DATABASE_URL.
"""

import functools
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import flask
import pytest
import sqlalchemy as sa
from itsdangerous import URLSafeTimedSerializer

import app.auth.routes as auth_routes
from app import db, mailer
from app.models import User
from app.ratelimits import DEVICE_COOKIE
from config import Config, limit_storage_warning
from tests.helpers import PASSWORD, TEST_REDIS_URL, links_in
from tests.mailserver import free_port

ROOT = Path(__file__).resolve().parents[1]
SITE = 'microblog.example.com'
NEW_PASSWORD = 'quiet-Meadow-lantern-42'
CHECK_EMAIL = 'Check your email for the instructions to reset your password'
PER_ADDRESS_AND_USERNAME = 3
CEILING = 6
LIMITS = {
    'RATELIMIT_ENABLED': True,
    'RATELIMIT_LOGIN_PER_ADDRESS': '1000 per minute',
    'RATELIMIT_LOGIN_PER_ADDRESS_AND_USERNAME': f'{PER_ADDRESS_AND_USERNAME} per minute',
    'RATELIMIT_LOGIN_PER_USERNAME': f'{CEILING} per minute',
    'RATELIMIT_RESET_PER_ADDRESS': '1000 per hour',
    'RATELIMIT_RESET_PER_ADDRESS_AND_EMAIL': '2 per hour',
}
STORAGES = ['memory://'] + ([TEST_REDIS_URL] if TEST_REDIS_URL else [])
KNOWN_BROWSERS_ONLY = 'it can only be signed in from a browser it has used'


@pytest.fixture(params=STORAGES, ids=lambda uri: uri.split(':')[0])
def storage_uri(request):
    """Where the limits are counted: memory, and Redis when TEST_REDIS_URL is set."""
    if request.param.startswith('redis'):
        from redis import Redis

        Redis.from_url(request.param).flushdb()
    return request.param


@pytest.fixture
def app(make_app, storage_uri):
    """An app with small limits and two accounts, susan and john; no app context pushed."""
    app = make_app(RATELIMIT_STORAGE_URI=storage_uri, **LIMITS)
    with app.app_context():
        for name in ('susan', 'john'):
            user = User(username=name, email=f'{name}@example.com')
            user.set_password(PASSWORD)
            db.session.add(user)
        db.session.commit()
    return app


def browser(app, address):
    """A browser of its own (its own cookies) at a client address."""
    client = app.test_client()
    client.environ_base['REMOTE_ADDR'] = address
    return client


def log_in(client, username='susan', password=PASSWORD):
    return client.post('/login', data={'username': username, 'password': password})


def statuses(responses):
    return [response.status_code for response in responses]


def guesses_from_many_addresses(app, username='susan', count=CEILING + 2, first=10):
    """One wrong password from each of ``count`` addresses; their answers."""
    return [
        log_in(browser(app, f'203.0.113.{first + number}'), username, 'wrong-guess')
        for number in range(count)
    ]


def owners_browser(app, address='198.51.100.1'):
    """A browser that susan has signed in from, and signed out of again."""
    client = browser(app, address)
    assert log_in(client).status_code == 302
    assert client.get_cookie(DEVICE_COOKIE, domain=SITE, path='/login') is not None
    client.post('/logout')
    return client


# A stranger at one address


def test_a_strangers_failures_at_one_address_do_not_block_the_owner_elsewhere(app):
    stranger = browser(app, '203.0.113.7')
    answers = [log_in(stranger, 'susan', 'wrong-guess') for _ in range(8)]
    assert statuses(answers) == [200] * PER_ADDRESS_AND_USERNAME + [429] * 5
    assert 'Too many requests' in answers[-1].text
    assert log_in(browser(app, '198.51.100.1')).status_code == 302  # a browser never used before


def test_a_stranger_behind_the_owners_address_does_not_lock_a_known_browser_out(make_app):
    app = make_app(**{**LIMITS, 'RATELIMIT_LOGIN_PER_ADDRESS': '5 per minute'})
    with app.app_context():
        user = User(username='susan', email='susan@example.com')
        user.set_password(PASSWORD)
        db.session.add(user)
        db.session.commit()
    known = owners_browser(app, '192.0.2.77')  # one of the 5
    stranger = browser(app, '192.0.2.77')  # the same NAT address
    answers = [log_in(stranger, f'user{number}', 'wrong-guess') for number in range(5)]
    assert statuses(answers) == [200] * 4 + [429]
    assert log_in(browser(app, '192.0.2.77')).status_code == 429  # a new browser waits
    assert log_in(known).status_code == 302


def test_the_limit_ignores_the_case_and_spaces_of_the_name(app):
    stranger = browser(app, '203.0.113.7')
    names = ['susan', 'SUSAN', ' Susan ', 'susaN']
    answers = [log_in(stranger, name, 'wrong-guess') for name in names]
    assert statuses(answers) == [200, 200, 200, 429]


# Strangers at many addresses


def test_past_the_ceiling_only_a_browser_the_owner_used_gets_in(app):
    known = owners_browser(app)
    answers = guesses_from_many_addresses(app)
    assert statuses(answers) == [200] * CEILING + [429] * 2
    assert KNOWN_BROWSERS_ONLY in answers[-1].text
    refused = log_in(browser(app, '198.51.100.2'))  # right password, unknown browser
    assert refused.status_code == 429 and KNOWN_BROWSERS_ONLY in refused.text
    assert log_in(known).status_code == 302
    known.post('/logout')
    known.environ_base['REMOTE_ADDR'] = '192.0.2.200'  # the same browser, elsewhere
    assert log_in(known).status_code == 302


def test_a_new_password_from_a_reset_link_lets_that_browser_in(app):
    guesses_from_many_addresses(app)
    owner = browser(app, '198.51.100.3')
    assert log_in(owner).status_code == 429
    with mailer.record_messages() as sent:
        owner.post('/reset_password_request', data={'email': 'susan@example.com'})
        app.extensions['mail_delivery'].flush()
    [message] = sent
    [link] = [link for link in links_in(message.body) if '/reset_password/' in link]
    assert owner.get(urllib.parse.urlsplit(link).path).headers['Location'] == '/reset_password'
    data = {'password': NEW_PASSWORD, 'password2': NEW_PASSWORD}
    assert owner.post('/reset_password', data=data).headers['Location'] == '/login'
    assert log_in(owner, password=NEW_PASSWORD).status_code == 302
    assert log_in(browser(app, '198.51.100.4'), password=NEW_PASSWORD).status_code == 429


def test_a_remembered_browser_counts_its_own_failures(app):
    known = owners_browser(app)
    answers = [
        log_in(known, 'susan', 'wrong-guess') for _ in range(2 * PER_ADDRESS_AND_USERNAME + 1)
    ]
    # Its own allowance, then the address's like any browser, then a 429 page.
    assert statuses(answers) == [200] * (2 * PER_ADDRESS_AND_USERNAME) + [429]


def forged_device_cookie(app, user_id, key):
    """A device cookie for ``user_id`` as the app would make it, signed with ``key``."""
    from app.ratelimits import _name_in_cookie

    with app.test_request_context():
        name = _name_in_cookie('susan')
    serializer = URLSafeTimedSerializer(key, salt='microblog-login-device')
    return serializer.dumps([[user_id, name, 'nonce']])


@pytest.mark.parametrize('how', ['another account', 'another key', 'tampered', 'garbage'])
def test_a_device_cookie_must_be_the_accounts_and_the_sites(app, how):
    with app.app_context():
        susan_id = db.session.scalar(sa.select(User.id).where(User.username == 'susan'))
    client = browser(app, '198.51.100.5')
    if how == 'another account':
        assert log_in(client, 'john').status_code == 302  # a real cookie, for john
        client.post('/logout')
    else:
        key = {'another key': 'another-secret-key-that-is-at-least-32-bytes'}.get(
            how, app.config['SECRET_KEY']
        )
        value = forged_device_cookie(app, susan_id, key)
        if how == 'tampered':
            value = value.replace(value.split('.')[0], value.split('.')[0][::-1])
        if how == 'garbage':
            value = 'not.a.device.cookie'
        client.set_cookie(DEVICE_COOKIE, value, domain=SITE, path='/login')
    guesses_from_many_addresses(app)
    assert log_in(client).status_code == 429


@pytest.mark.sqlite_only
def test_the_device_cookie_is_httponly_strict_and_only_for_the_login_form(app):
    response = log_in(browser(app, '198.51.100.6'))
    [cookie] = [
        header
        for header in response.headers.getlist('Set-Cookie')
        if header.startswith(DEVICE_COOKIE + '=')
    ]
    for attribute in ('HttpOnly', 'SameSite=Strict', 'Path=/login', 'Max-Age=31536000'):
        assert attribute in cookie
    assert 'susan' not in cookie


# At once, and what counts as a failure


@pytest.mark.parametrize('addresses', [1, 40], ids=['one address', 'forty addresses'])
def test_forty_guesses_at_once_get_at_most_the_limit_checked(app, monkeypatch, addresses):
    checked = []
    original = auth_routes.check_login

    def counting(user, password):
        checked.append(password)
        return original(user, password)

    monkeypatch.setattr(auth_routes, 'check_login', counting)
    clients = [browser(app, f'203.0.113.{number % addresses + 1}') for number in range(40)]
    barrier = threading.Barrier(len(clients))
    answers = [None] * len(clients)

    def guess(number):
        barrier.wait(30)
        answers[number] = log_in(clients[number], 'susan', f'guess-{number}')

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
        assert not thread.is_alive()
    limit = PER_ADDRESS_AND_USERNAME if addresses == 1 else CEILING
    assert 1 <= len(checked) <= limit
    assert statuses(answers).count(200) == len(checked)
    assert statuses(answers).count(429) == 40 - len(checked)


@pytest.mark.sqlite_only
def test_a_success_is_what_the_view_decided_not_its_status_code(app, monkeypatch):
    # Flask 3.2 redirects with 303: a success must not count as a failure then.
    monkeypatch.setattr(auth_routes, 'redirect', functools.partial(flask.redirect, code=303))
    for _ in range(CEILING + 2):  # new browsers, each counted by the address alone
        assert log_in(browser(app, '198.51.100.7')).status_code == 303
    client = browser(app, '198.51.100.7')
    answers = [log_in(client, 'susan', 'wrong-guess') for _ in range(PER_ADDRESS_AND_USERNAME)]
    assert statuses(answers) == [200] * PER_ADDRESS_AND_USERNAME


# Known and unknown accounts


def comparable(response, name):
    """What a response shows, the typed name and cookie values left out."""
    headers = sorted(
        (key, re.sub(r'^([^=]+)=[^;]*', r'\1=…', value) if key == 'Set-Cookie' else value)
        for key, value in response.headers.items()
        if key not in ('Date', 'Content-Length')  # the names differ in length; bodies compared
    )
    return response.status_code, response.text.replace(name, 'NAME'), headers


@pytest.mark.sqlite_only
def test_answers_are_the_same_for_known_and_unknown_usernames(app):
    seen = {}
    for name, first in (('susan', 10), ('nobody', 30)):
        stranger = browser(app, '192.0.2.9')
        answers = [
            log_in(stranger, name, 'wrong-guess') for _ in range(PER_ADDRESS_AND_USERNAME + 1)
        ]
        answers += guesses_from_many_addresses(app, name, first=first)
        seen[name] = [comparable(response, name) for response in answers]
    assert [status for status, _, _ in seen['susan']] == (
        [200] * PER_ADDRESS_AND_USERNAME
        + [429]
        + [200] * (CEILING - PER_ADDRESS_AND_USERNAME)
        + [429] * (PER_ADDRESS_AND_USERNAME + 2)
    )
    assert seen['susan'] == seen['nobody']


# Reset emails


def test_a_strangers_reset_requests_do_not_stop_the_owners_email(app):
    stranger, owner = browser(app, '203.0.113.50'), browser(app, '198.51.100.8')
    with mailer.record_messages() as sent:
        answers = [
            stranger.post('/reset_password_request', data={'email': 'susan@example.com'})
            for _ in range(5)
        ]
        app.extensions['mail_delivery'].flush()
        assert len(sent) == 2  # RATELIMIT_RESET_PER_ADDRESS_AND_EMAIL
        answers.append(owner.post('/reset_password_request', data={'email': 'Susan@Example.com'}))
        app.extensions['mail_delivery'].flush()
    assert len(sent) == 3
    assert all(message.recipients == ['susan@example.com'] for message in sent)
    assert {(r.status_code, r.headers['Location']) for r in answers} == {(302, '/login')}
    assert CHECK_EMAIL in owner.get('/login').text


@pytest.mark.sqlite_only
def test_reset_answers_are_the_same_for_known_and_unknown_addresses(app):
    seen = {}
    for address in ('susan@example.com', 'nobody@example.com'):
        client = browser(app, '203.0.113.60')
        answers = [
            client.post('/reset_password_request', data={'email': address}) for _ in range(4)
        ]
        answers.append(client.get('/login'))
        seen[address] = [comparable(response, address) for response in answers]
    assert seen['susan@example.com'] == seen['nobody@example.com']


# Across processes


@pytest.mark.parametrize(
    ('workers', 'settings', 'warned'),
    [
        (2, {}, True),
        (4, {'RATELIMIT_STORAGE_URI': 'memory://'}, True),
        (1, {}, False),
        (2, {'RATELIMIT_STORAGE_URI': 'redis://127.0.0.1:6379/1'}, False),
        (2, {'RATELIMIT_ENABLED': False}, False),
    ],
)
def test_a_warning_when_workers_would_count_limits_apart(workers, settings, warned):
    config = type('DeployedConfig', (Config,), {'RATELIMIT_STORAGE_URI': 'memory://', **settings})
    warning = limit_storage_warning(config, workers)
    if warned:
        assert f'{workers} times higher' in warning and 'RATELIMIT_STORAGE_URI=redis://' in warning
    else:
        assert warning is None


def serve(tmp_path, workers, **settings):
    """gunicorn on 127.0.0.1 with the project's gunicorn.conf.py; (base URL, process, log)."""
    port = free_port()
    env = {
        **os.environ,
        'FLASK_APP': 'microblog.py',
        'FLASK_DEBUG': '0',
        'SECRET_KEY': 'limit-test-secret-key-that-is-long-enough-0123',
        'SERVER_NAME': f'127.0.0.1:{port}',
        'PREFERRED_URL_SCHEME': 'http',
        'SESSION_COOKIE_SECURE': 'false',
        'WTF_CSRF_ENABLED': 'false',
        'DATABASE_URL': f'sqlite:///{tmp_path / "served.db"}',
        'MAIL_QUEUE': 'none',
        'LOG_TO_STDOUT': '1',
        'RATELIMIT_STORAGE_URI': 'memory://',
        **settings,
    }
    bindir = Path(sys.executable).parent
    subprocess.run(
        [str(bindir / 'flask'), 'db', 'upgrade'], cwd=ROOT, env=env, check=True, capture_output=True
    )
    log_path = tmp_path / 'gunicorn.log'
    log = open(log_path, 'w')  # noqa: SIM115 - closed by stop()
    command = [sys.executable, '-m', 'gunicorn', '-w', str(workers), '--threads', '4']
    process = subprocess.Popen(
        [*command, '-b', f'127.0.0.1:{port}', 'microblog:app'],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f'http://127.0.0.1:{port}'
    # Ready once every worker has booted and the site answers (a bounded poll).
    deadline = time.monotonic() + 60
    while True:
        booted = log_path.read_text().count('Booting worker')
        try:
            with urllib.request.urlopen(base + '/login', timeout=5) as response:
                if response.status == 200 and booted >= workers:
                    break
        except OSError:  # not listening yet, or too busy to answer in time
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            log.close()
            raise RuntimeError(log_path.read_text())
        time.sleep(0.1)

    def stop():
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()
        return log_path.read_text()

    return base, stop


@pytest.mark.parametrize('workers', [2, 1])
def test_gunicorn_says_once_when_its_workers_count_limits_apart(tmp_path, workers):
    _, stop = serve(tmp_path, workers)
    log = stop()
    assert log.count('times higher than set') == (1 if workers > 1 else 0), log


def post_guess(base, number):
    """A wrong password for susan over HTTP; the status of the answer."""
    body = urllib.parse.urlencode({'username': 'susan', 'password': f'guess-{number}'}).encode()
    try:
        with urllib.request.urlopen(base + '/login', data=body, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_forty_guesses_at_two_workers_sharing_redis_get_at_most_the_limit(tmp_path):
    if not TEST_REDIS_URL:
        pytest.skip('TEST_REDIS_URL is not set: counting limits once across workers needs Redis')
    from redis import Redis

    Redis.from_url(TEST_REDIS_URL).flushdb()
    settings = {key: str(value) for key, value in LIMITS.items()}
    base, stop = serve(tmp_path, 2, RATELIMIT_STORAGE_URI=TEST_REDIS_URL, **settings)
    try:
        barrier = threading.Barrier(40)
        answers = [None] * 40

        def guess(number):
            barrier.wait(30)
            answers[number] = post_guess(base, number)

        threads = [threading.Thread(target=guess, args=(n,)) for n in range(40)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
            assert not thread.is_alive()
    finally:
        log = stop()
    assert set(answers) <= {200, 429}, log
    assert 1 <= answers.count(200) <= PER_ADDRESS_AND_USERNAME
    assert 'times higher than set' not in log
