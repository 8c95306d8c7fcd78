"""Sessions on the server: what logout, "sign out other sessions" and a new password end,
and what a reset in progress keeps (and does not keep) in the browser."""

import base64
import json
import re
import zlib
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app import db
from app.models import User, UserSession, utcnow
from tests.helpers import PASSWORD

SITE = 'microblog.example.com'
NEW_PASSWORD = 'quiet-Meadow-lantern-42'
FIREFOX = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0'
IPHONE = (
    'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 '
    '(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1'
)


@pytest.fixture
def susan(make_user):
    """An account called susan."""
    return make_user('susan')


def log_in(client, remember=False, user_agent=FIREFOX, address='203.0.113.7'):
    data = {'username': 'susan', 'password': PASSWORD}
    if remember:
        data['remember_me'] = 'y'
    response = client.post(
        '/login',
        data=data,
        headers={'User-Agent': user_agent},
        environ_base={'REMOTE_ADDR': address},
    )
    assert response.headers['Location'] == '/index'
    return client


def copy_of(client, app):
    """Another browser holding a copy of the client's session cookie."""
    thief = app.test_client()
    thief.set_cookie('session', client.get_cookie('session', domain=SITE).value, domain=SITE)
    return thief


def signed_in(client):
    return client.get('/index').status_code == 200


def cookie_payload(client):
    """What a Flask session cookie says to anyone who reads it (it is signed, not encrypted)."""
    value = client.get_cookie('session', domain=SITE).value
    compressed = value.startswith('.')
    data = value.lstrip('.').split('.')[0]
    raw = base64.urlsafe_b64decode(data + '=' * (-len(data) % 4))
    return json.loads(zlib.decompress(raw) if compressed else raw)


@pytest.mark.parametrize('remember', [False, True])
def test_a_cookie_copied_before_logout_is_refused_after_it(app, client, susan, remember):
    log_in(client, remember=remember)
    thief = copy_of(client, app)
    assert signed_in(thief)
    client.post('/logout')
    assert not signed_in(client)
    assert not signed_in(thief)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(UserSession)) == 0


def test_the_sessions_page_lists_them_and_signs_out_the_others(app, susan):
    laptop = log_in(app.test_client(), user_agent=FIREFOX, address='203.0.113.7')
    phone = log_in(app.test_client(), user_agent=IPHONE, address='198.51.100.23')
    phone_copy = copy_of(phone, app)

    page = laptop.get('/sessions').text
    rows = re.findall(r'<tr>\s*<td>(.*?)</td>\s*<td>(.*?)</td>', page)
    # Most recently used first.
    assert rows == [
        ('Mobile Safari on iOS', '198.51.100.23'),
        ('Firefox on Windows <strong>(this browser)</strong>', '203.0.113.7'),
    ]

    response = laptop.post('/sessions')
    assert response.headers['Location'] == '/sessions'
    page = laptop.get('/sessions').text
    assert 'Signed out of 1 other session.' in page
    assert 'Mobile Safari on iOS' not in page
    assert signed_in(laptop)
    assert not signed_in(phone) and not signed_in(phone_copy)


def test_the_sessions_page_shows_and_ends_only_this_accounts_live_sign_ins(app, susan, make_user):
    laptop = log_in(app.test_client(), user_agent=FIREFOX, address='203.0.113.7')
    phone = log_in(app.test_client(), user_agent=IPHONE, address='198.51.100.23')
    make_user('bob')
    bobs = app.test_client()
    bobs.post('/login', data={'username': 'bob', 'password': PASSWORD})
    assert signed_in(bobs)
    laptop_row, phone_row = db.session.scalars(
        sa.select(UserSession).where(UserSession.user_id == susan.id).order_by(UserSession.id)
    ).all()
    # The laptop, signed in first, was used last; an old sign-in ran out; a reset is under way.
    phone_row.last_seen_at = utcnow() - timedelta(minutes=10)
    laptop_row.last_seen_at = utcnow()
    now = utcnow()
    expired = UserSession(
        key_hash='e' * 64,
        user_id=susan.id,
        purpose=UserSession.LOGIN,
        device='Old Opera',
        ip_address='192.0.2.1',
        created_at=now - timedelta(days=60),
        last_seen_at=now,
        expires_at=now - timedelta(seconds=1),
    )
    reset = UserSession(
        key_hash='r' * 64,
        user_id=susan.id,
        purpose=UserSession.RESET,
        device='Reset Edge',
        ip_address='192.0.2.2',
        expires_at=now + timedelta(minutes=10),
        reset_state='state',
    )
    db.session.add_all([expired, reset])
    db.session.commit()

    page = laptop.get('/sessions').text
    rows = re.findall(r'<tr>\s*<td>(.*?)</td>\s*<td>(.*?)</td>', page)
    assert rows == [
        ('Firefox on Windows <strong>(this browser)</strong>', '203.0.113.7'),
        ('Mobile Safari on iOS', '198.51.100.23'),
    ]

    db.session.delete(expired)
    db.session.commit()
    laptop.post('/sessions')
    assert 'Signed out of 1 other session.' in laptop.get('/sessions').text
    assert signed_in(laptop) and not signed_in(phone)
    assert signed_in(bobs)
    assert db.session.get(UserSession, reset.id) is not None


def test_the_sessions_page_needs_a_login(client):
    assert client.get('/sessions').headers['Location'].startswith('/login')
    assert client.post('/sessions').headers['Location'].startswith('/login')


def test_logging_out_when_not_signed_in_is_no_error(client):
    assert client.post('/logout').headers['Location'] == '/login'


def test_the_pages_after_logout_stay_in_the_accounts_language(app, client, susan):
    susan.locale = 'zh_CN'
    db.session.commit()
    log_in(client)
    client.post('/logout')
    assert '<html lang="zh-CN">' in client.get('/login').text


def test_the_sessions_page_names_devices_in_the_accounts_language(app, susan):
    reader = log_in(app.test_client(), user_agent=FIREFOX)
    log_in(app.test_client(), user_agent='')
    susan.locale = 'zh_CN'
    db.session.commit()
    page = reader.get('/sessions').text
    assert 'Windows 上的 Firefox' in page and '未知设备' in page
    assert 'Unknown device' not in page and 'Firefox on Windows' not in page


def test_a_sign_in_removes_its_accounts_expired_rows_and_no_live_one(app, susan, make_user):
    # The table holds live sessions: a sign-in clears the rows of its account that ran out.
    bob = make_user('bob')
    phone = log_in(app.test_client(), user_agent=IPHONE)
    now = utcnow()

    def run_out(user, name):
        return UserSession(
            key_hash=name * 64,
            user_id=user.id,
            purpose=UserSession.LOGIN,
            created_at=now - timedelta(days=2),
            last_seen_at=now - timedelta(days=2),
            expires_at=now - timedelta(seconds=1),
        )

    db.session.add_all([run_out(susan, 'a'), run_out(bob, 'b')])
    db.session.commit()
    laptop = log_in(app.test_client())
    left = [
        tuple(row)
        for row in db.session.execute(sa.select(UserSession.user_id, UserSession.key_hash))
    ]
    assert (susan.id, 'a' * 64) not in left
    # Another account's rows are its own sign-ins' to clear; the phone stays signed in.
    assert (bob.id, 'b' * 64) in left
    assert [user_id for user_id, _ in left].count(susan.id) == 2
    assert signed_in(phone) and signed_in(laptop)


def test_a_session_past_its_lifetime_is_refused(app, client, susan):
    log_in(client)
    db.session.execute(sa.update(UserSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    assert client.get('/index').headers['Location'].startswith('/login')


def test_use_is_written_at_most_once_a_minute_and_extends_the_session(app, client, susan):
    log_in(client)
    row = db.session.scalar(sa.select(UserSession))
    first = (row.last_seen_at, row.expires_at)
    client.get('/index')
    db.session.expire_all()
    assert (row.last_seen_at, row.expires_at) == first  # a page view is not a write

    two_minutes_ago = utcnow() - timedelta(minutes=2)
    db.session.execute(sa.update(UserSession).values(last_seen_at=two_minutes_ago))
    db.session.execute(sa.update(User).values(last_seen=two_minutes_ago))
    db.session.commit()
    client.get('/index')
    db.session.expire_all()
    assert row.last_seen_at > two_minutes_ago + timedelta(seconds=100)
    assert row.expires_at > first[1]
    assert db.session.get(User, susan.id).last_seen > two_minutes_ago + timedelta(seconds=100)


def test_remember_me_lives_longer_on_the_server_too(app, client, susan):
    log_in(client, remember=True)
    log_in(app.test_client())
    remembered, plain = db.session.scalars(sa.select(UserSession).order_by(UserSession.id))
    assert remembered.remember and not plain.remember
    assert remembered.expires_at - remembered.created_at == timedelta(days=30)
    assert plain.expires_at - plain.created_at == timedelta(days=1)


# A reset in progress


def test_the_cookie_and_the_database_hold_no_reset_token(app, client, susan):
    token = susan.get_reset_password_token()
    assert client.get(f'/reset_password/{token}').headers['Location'] == '/reset_password'
    payload = json.dumps(cookie_payload(client))
    assert token not in payload and not re.search(r'eyJ[\w-]+\.', payload)
    for row in db.session.execute(sa.select(UserSession.__table__)).all():
        assert not any(token in str(value) for value in row)
    assert 'Choose a new password for <strong>susan</strong>.' in client.get('/reset_password').text


def test_a_link_for_another_account_asks_before_replacing_the_reset_in_progress(
    app, client, make_user
):
    susan, mallory = make_user('susan'), make_user('mallory')
    client.get(f'/reset_password/{susan.get_reset_password_token()}')
    # A page on another site opens mallory's own link in susan's browser.
    planted = f'/reset_password/{mallory.get_reset_password_token()}'
    page = client.get(planted)
    assert page.status_code == 200
    assert 'already resetting the password of <strong>susan</strong>' in page.text
    assert 'Choose a new password for <strong>susan</strong>.' in client.get('/reset_password').text

    # Asked, and confirmed: now it is mallory's account that would change.
    assert client.post(planted).headers['Location'] == '/reset_password'
    assert 'for <strong>mallory</strong>.' in client.get('/reset_password').text


def test_the_same_link_opened_twice_does_not_ask(client, susan):
    link = f'/reset_password/{susan.get_reset_password_token()}'
    client.get(link)
    assert client.get(link).headers['Location'] == '/reset_password'


def test_a_successful_login_ends_the_links_sent_before_it(app, client, susan):
    token = susan.get_reset_password_token()
    log_in(app.test_client())
    assert User.verify_reset_password_token(token) is None
    assert client.get(f'/reset_password/{token}').headers['Location'] == ('/reset_password_request')


def test_a_login_during_a_reset_ends_the_reset_in_progress(app, client, susan):
    client.get(f'/reset_password/{susan.get_reset_password_token()}')
    log_in(app.test_client())  # the owner remembered the password after all, elsewhere
    assert client.get('/reset_password').headers['Location'] == '/reset_password_request'


def test_a_new_session_is_last_seen_when_made_and_keeps_no_made_up_address(app, susan):
    log_in(app.test_client(), address='')
    row = db.session.scalar(sa.select(UserSession))
    assert row.last_seen_at == row.created_at
    assert row.ip_address is None


def test_a_session_keeps_at_most_the_45_characters_its_address_column_holds(app, susan):
    # Behind a proxy the address comes from a header, of any length; PostgreSQL
    # refuses a longer value, and the login with it would fail.
    address = '2001:db8:' + 'a' * 40
    log_in(app.test_client(), address=address)
    assert db.session.scalar(sa.select(UserSession.ip_address)) == address[:45]


def test_a_reset_in_progress_is_no_sign_in_and_a_login_ends_its_row(app, client, susan):
    client.get(f'/reset_password/{susan.get_reset_password_token()}')
    with client.session_transaction() as session:
        reset_key = session['reset_session']
    # The key of a reset in progress, where a sign-in key goes, signs nobody in.
    other = app.test_client()
    with other.session_transaction() as session:
        session['_user_id'] = reset_key
        session['_fresh'] = True
    assert not signed_in(other)
    # Logging in in the same browser ends the reset there, and on the server.
    log_in(client)
    purposes = db.session.scalars(sa.select(UserSession.purpose)).all()
    assert purposes == [UserSession.LOGIN]


def test_a_reset_ends_every_session_of_the_account(app, client, susan):
    others = [log_in(app.test_client()), log_in(app.test_client(), remember=True)]
    client.get(f'/reset_password/{susan.get_reset_password_token()}')
    client.post('/reset_password', data={'password': NEW_PASSWORD, 'password2': NEW_PASSWORD})
    assert not any(signed_in(other) for other in others)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(UserSession)) == 0


# What pages and logs give away


def test_signed_in_pages_are_private_and_not_stored(app, client, susan):
    assert 'private' not in client.get('/explore').headers.get('Cache-Control', '')
    log_in(client)
    for path in ('/index', '/explore', '/user/susan', '/sessions', '/edit_profile'):
        assert client.get(path).headers['Cache-Control'] == 'private, no-store', path


def test_database_errors_carry_no_parameters(app, susan):
    db.session.add(User(username='susan2', email='susan@example.com', password_hash='hash-xyz'))
    with pytest.raises(sa.exc.IntegrityError) as error:
        db.session.commit()
    db.session.rollback()
    assert 'hash-xyz' not in str(error.value)
    assert '[SQL parameters hidden due to hide_parameters=True]' in str(error.value)
