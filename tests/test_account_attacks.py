"""Attacks on the account emails: each test asserts the safe behaviour, so it fails where
the feature breaks a promise the README makes (see "Your account: confirming, changing,
undoing"), and passes where the code holds.

Two attackers: a stranger (no account, or one of their own), and a thief who has the
owner's password and a signed-in session, but not the owner's mailbox.
"""

import re
from contextlib import contextmanager
from datetime import timedelta
from urllib.parse import urljoin, urlsplit

import pytest
import sqlalchemy as sa

from app import db, mailer
from app.auth.tokens import CONFIRM_EMAIL, CONFIRM_NEW_EMAIL, UNDO_EMAIL_CHANGE, make_link_token
from app.models import EmailChange, User, UserSession, utcnow
from tests.helpers import (
    PASSWORD,
    Outbox,
    at_once,
    first_writes_meet,
    links_in,
    recorded_statements,
    sign_in_as,
    waiting_change,
)

NEW_PASSWORD = 'quiet-Meadow-lantern-42'
SITE = 'https://microblog.example.com'
ALREADY_CONFIRMED = 'Your email address is already confirmed.'


# Helpers (the same shapes as tests/test_account_emails.py)


def register(client, username, email, password=NEW_PASSWORD):
    data = {'username': username, 'email': email, 'password': password, 'password2': password}
    return client.post('/register', data=data)


def change_email(client, address, password=PASSWORD):
    return client.post('/settings/email', data={'email': address, 'current_password': password})


def change_password(client, current=PASSWORD, new=NEW_PASSWORD):
    data = {'current_password': current, 'password': new, 'password2': new}
    return client.post('/settings/password', data=data)


def messages_to(outbox, address):
    return [m for m in outbox.wait() if m.recipients == [address]]


def link(message, fragment):
    urls = [url for url in links_in(message.body) if fragment in url]
    assert urls, (fragment, message.body)
    assert urls[0].startswith(SITE)
    return urls[-1][len(SITE) :]


def last_link_to(outbox, address, fragment):
    found = [m for m in messages_to(outbox, address) if fragment in m.body]
    assert found, (address, fragment, [m.subject for m in outbox])
    return link(found[-1], fragment)


def confirmed(user):
    """``user``, with its address confirmed: only a confirmed address may undo a change."""
    user.email_confirmed_at = utcnow()
    db.session.commit()
    return user


def user_named(name):
    db.session.expire_all()
    return db.session.scalar(sa.select(User).where(User.username == name))


def normalized(page):
    page = re.sub(r'value="[\w.-]+"', 'value=""', page)  # CSRF tokens
    return page


@contextmanager
def recording(app):
    """The mail of an app made with make_app (the outbox fixture flushes another app)."""
    with mailer.record_messages() as recorded:
        yield Outbox(app, recorded)


def app_with_zoe(make_app, **overrides):
    app = make_app(**overrides)
    with app.app_context():
        zoe = User(username='zoe', email='zoe@example.com', email_confirmed_at=utcnow())
        zoe.set_password(PASSWORD)
        db.session.add(zoe)
        db.session.commit()
    return app


# 1. The undo promise, against a thief who knows the password


def test_undo_survives_the_thief_chaining_a_second_change(client, make_user, outbox, app):
    """The thief moves the account twice in a row: the owner's undo link must still work.

    The README: the old address gets "a link that ... for EMAIL_CHANGE_UNDO_LIFETIME,
    puts the old address back". A second change made right after the first kills it
    (undoable_change wants the account to still have the first change's new address),
    and the second change's notice goes to the thief's first address.
    """
    zoe = confirmed(make_user('zoe', email='zoe@example.com'))
    sign_in_as(client, zoe)  # the thief, with zoe's password
    change_email(client, 'thief1@evil.example')
    client.post(last_link_to(outbox, 'thief1@evil.example', '/confirm_new_email/'))
    change_email(client, 'thief2@evil.example')
    client.post(last_link_to(outbox, 'thief2@evil.example', '/confirm_new_email/'))
    assert user_named('zoe').email == 'thief2@evil.example'

    # What the owner's mailbox has: the notices of the first change, with undo links.
    undo_links = {link(m, '/undo_email_change/') for m in messages_to(outbox, 'zoe@example.com')}
    assert undo_links
    owner = app.test_client()
    for path in undo_links:
        owner.post(path)
        if user_named('zoe').email == 'zoe@example.com':
            break
    assert user_named('zoe').email == 'zoe@example.com', (
        'the owner cannot get the account back: the thief chained two changes'
    )


def test_undo_survives_the_thief_registering_the_old_address(client, make_user, outbox, app):
    """The thief moves the account, then registers a new account with the freed old address.

    Registration makes the (unconfirmed) account at once, so the old address is taken
    when the owner presses undo, and the undo gives up: the account stays the thief's.
    """
    zoe = confirmed(make_user('zoe', email='zoe@example.com'))
    sign_in_as(client, zoe)
    change_email(client, 'thief@evil.example')
    client.post(last_link_to(outbox, 'thief@evil.example', '/confirm_new_email/'))
    undo = last_link_to(outbox, 'zoe@example.com', '/undo_email_change/')

    squatter = app.test_client()
    register(squatter, 'squatter', 'zoe@example.com')

    owner = app.test_client()
    owner.post(undo)
    zoe = user_named('zoe')
    assert zoe.email == 'zoe@example.com', (
        f'undo refused because the thief squatted the old address; account stays {zoe.email}'
    )


def test_an_undo_link_sent_to_a_never_confirmed_address_does_not_hand_over_the_account(
    client, make_user, outbox, app
):
    """An account registered with a mistyped (never confirmed) address moves to its real one.

    The typo's owner gets the notice, and its undo link takes the account back to the
    typo and starts a password reset in the typo owner's browser: an account takeover
    by someone the owner never proved anything to, for the whole undo lifetime, after
    the owner proved the new address.
    """
    zoe = make_user('zoe', email='zoe@gmial.example')  # never confirmed
    sign_in_as(client, zoe)
    change_email(client, 'zoe@right.example')
    client.post(last_link_to(outbox, 'zoe@right.example', '/confirm_new_email/'))
    assert user_named('zoe').email == 'zoe@right.example'

    # The typo's owner is told, with no link that could take the account.
    notices = messages_to(outbox, 'zoe@gmial.example')
    assert notices
    assert not [m for m in notices if '/undo_email_change/' in m.body + m.html]
    assert user_named('zoe').email == 'zoe@right.example'


def test_an_undo_link_opened_while_signed_in_as_another_account_changes_nothing(
    client, make_user, outbox, app
):
    sign_in_as(client, confirmed(make_user('zoe')))
    change_email(client, 'thief@evil.example')
    client.post(last_link_to(outbox, 'thief@evil.example', '/confirm_new_email/'))
    undo = last_link_to(outbox, 'zoe@example.com', '/undo_email_change/')
    mallory = sign_in_as(app.test_client(), make_user('mallory'))
    assert mallory.post(undo).status_code == 403
    assert user_named('zoe').email == 'thief@evil.example'
    assert mallory.get('/index').status_code == 200  # mallory is not signed out either


# 2. Registration must not tell whether an address has an account


def test_changing_to_a_taken_address_answers_the_same(client, make_user, app):
    make_user('susan', email='susan@example.com')
    pages = []
    for name, address in (('zoe', 'susan@example.com'), ('ann', 'free@example.com')):
        browser = sign_in_as(app.test_client(), make_user(name))
        response = change_email(browser, address)
        page = browser.get(response.headers['Location']).text
        pages.append(normalized(page).replace(address, 'ADDRESS').replace(name, 'NAME'))
    assert pages[0] == pages[1]


# 3. Hostile input never makes a 500


HOSTILE = [
    '\x00',
    'zoe\x00@example.com',
    'x' * 10_000,
    'zoe@bücher.example',
    'zoé@example.com',
    '=?utf-8?q?evil=40evil.example?=@example.com',
    'zoe@example.com\n',
    'zoe@example.com\r\nBcc: evil@evil.example',
    '"<script>alert(1)</script>"@example.com',
    'zoe@' + 'a' * 63 + '.' + 'b' * 63 + '.example',
]


@pytest.mark.parametrize('value', HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_registration_fields_get_an_answer_not_an_error(client, value):
    fields = {
        'username': {'username': value, 'email': 'zoe@example.com'},
        'email': {'username': 'zoe', 'email': value},
    }
    for name, data in fields.items():
        data = {**data, 'password': NEW_PASSWORD, 'password2': NEW_PASSWORD}
        response = client.post('/register', data=data)
        assert response.status_code in (200, 302, 400), (name, response.status_code)
    response = client.post(
        '/register',
        data={'username': 'zoe2', 'email': 'z2@example.com', 'password': value, 'password2': value},
    )
    assert response.status_code in (200, 302, 400)


@pytest.mark.parametrize('value', HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_settings_fields_get_an_answer_not_an_error(client, make_user, outbox, value):
    sign_in_as(client, confirmed(make_user('zoe')))
    assert change_email(client, value).status_code in (200, 302, 400)
    assert change_email(client, 'new@example.com', password=value).status_code in (200, 302, 400)
    assert change_password(client, current=value).status_code in (200, 302, 400)
    assert change_password(client, new=value).status_code in (200, 302, 400)
    response = client.post('/confirm_email/resend', query_string={'next': value})
    assert response.status_code in (302, 400)
    assert user_named('zoe').email == 'zoe@example.com'
    # Nothing that reached the outbox carries a header an address smuggled in.
    for message in outbox.wait():
        assert all('\n' not in r and '\r' not in r for r in message.recipients)
        assert 'evil.example' not in ' '.join(message.recipients)


def test_a_quoted_address_is_escaped_in_the_pages_and_the_html_email(client, make_user, outbox):
    sign_in_as(client, confirmed(make_user('zoe')))
    address = '"<b>x</b>"@example.com'
    response = change_email(client, address)
    if response.status_code == 200:
        pytest.skip('the address is refused: nothing to escape')
    assert '<b>x</b>' not in client.get('/settings').text
    for message in outbox.wait():
        assert '<b>x</b>' not in (message.html or '')


@pytest.mark.parametrize(
    'token',
    [
        'a' * 4097,
        '%00',
        'eyJhbGciOiJub25lIn0.eyJwdXJwb3NlIjoiY29uZmlybV9lbWFpbCJ9.',  # alg none
        '..',
        'a.b',
        '\u00e9.\u00e9.\u00e9',
    ],
)
@pytest.mark.parametrize('route', ['/confirm_email/', '/confirm_new_email/', '/undo_email_change/'])
def test_weird_tokens_get_a_clean_answer(client, make_user, route, token):
    sign_in_as(client, confirmed(make_user('zoe')))
    for method in (client.get, client.post, client.head):
        assert method(route + token).status_code in (302, 400, 404)


def test_undecodable_bytes_in_a_form_get_an_answer_not_an_error(client, make_user):
    body = b'username=%FF%FE&email=%ED%B3%BF%40example.com&password=%C0%80&password2=%C0%80'
    response = client.post('/register', data=body, content_type='application/x-www-form-urlencoded')
    assert response.status_code in (200, 302, 400)
    sign_in_as(client, confirmed(make_user('zoe')))
    response = client.post(
        '/settings/email',
        data=b'email=%FF%40example.com&current_password=%FF',
        content_type='application/x-www-form-urlencoded',
    )
    assert response.status_code in (200, 302, 400)


# 4. Links: GET changes nothing, a link is used once, CSRF guards every button


def confirm_token(user):
    return make_link_token(
        CONFIRM_EMAIL,
        utcnow() + timedelta(hours=1),
        user_id=user.id,
        email=user.email,
        state=user.confirm_state(),
    )


def test_get_and_head_on_every_link_change_nothing(client, make_user, outbox, app):
    ann = make_user('ann')  # not confirmed yet: her link confirms
    confirm = f'/confirm_email/{confirm_token(ann)}'
    zoe = confirmed(make_user('zoe'))  # confirmed: her old address may undo
    sign_in_as(client, zoe)
    change_email(client, 'new@example.com')
    new = last_link_to(outbox, 'new@example.com', '/confirm_new_email/')
    undo = last_link_to(outbox, 'zoe@example.com', '/undo_email_change/')
    scanner = app.test_client()
    for path in (confirm, new, undo):
        for method in (scanner.get, scanner.head, client.get, client.head):
            method(path, query_string={'submit': 'Confirm'})
    assert user_named('ann').email_confirmed_at is None
    assert user_named('zoe').email == 'zoe@example.com'
    assert db.session.scalar(sa.select(EmailChange.status)) == EmailChange.PENDING
    assert client.get('/index').status_code == 200  # the undo did not sign anyone out


def test_csrf_guards_every_state_change(make_app):
    app = make_app(WTF_CSRF_ENABLED=True)
    with app.app_context():
        zoe = User(username='zoe', email='zoe@example.com')
        zoe.set_password(PASSWORD)
        db.session.add(zoe)
        db.session.commit()
        change = waiting_change(zoe)

        later = utcnow() + timedelta(hours=1)
        new = make_link_token(
            CONFIRM_NEW_EMAIL, later, change_id=change.id, email='new@example.com'
        )
        undo = make_link_token(UNDO_EMAIL_CHANGE, later, change_id=change.id, email=zoe.email)
        hash_before = zoe.password_hash
        client = sign_in_as(app.test_client(), zoe)
        forged = [
            (
                '/settings/password',
                {'current_password': PASSWORD, 'password': NEW_PASSWORD, 'password2': NEW_PASSWORD},
            ),
            ('/settings/email', {'email': 'evil@evil.example', 'current_password': PASSWORD}),
            ('/settings/email/cancel', {}),
            (f'/confirm_email/{confirm_token(zoe)}', {}),
            (f'/confirm_new_email/{new}', {}),
            (f'/undo_email_change/{undo}', {}),
        ]
        with recording(app) as outbox:
            for path, data in forged:
                client.post(path, data=data)
            client.post('/confirm_email/resend', data={})
            assert [m.subject for m in outbox.wait()] == []
        zoe = user_named('zoe')
        assert zoe.password_hash == hash_before
        assert zoe.email == 'zoe@example.com' and zoe.email_confirmed_at is None
        statuses = db.session.scalars(sa.select(EmailChange.status)).all()
        assert statuses == ['pending']
        assert client.get('/index').status_code == 200


def test_a_confirm_link_pressed_twice_at_once_moves_once_and_tells_once(make_app):
    app = app_with_zoe(make_app)
    with app.app_context(), recording(app) as outbox:
        thief = sign_in_as(app.test_client(), db.session.get(User, 1))
        change_email(thief, 'new@example.com')
        path = last_link_to(outbox, 'new@example.com', '/confirm_new_email/')
        outbox.clear()
        browsers = [app.test_client() for _ in range(2)]
        with first_writes_meet(app, r'^UPDATE email_change'):
            responses = at_once(*(lambda b=b: b.post(path) for b in browsers))
        assert [r.status_code for r in responses] == [302, 302]
        assert user_named('zoe').email == 'new@example.com'
        made = [m for m in messages_to(outbox, 'zoe@example.com') if 'was changed from' in m.body]
        assert len(made) == 1


def test_a_confirmation_pressed_twice_at_once_confirms_once_and_says_so_once(make_app):
    """Both submissions pass the link's check before either writes: one confirms, the
    other is told the address is already confirmed (the update's own condition)."""
    app = make_app()
    with app.app_context(), recording(app) as outbox:
        register(app.test_client(), 'amy', 'amy@example.com')
        path = last_link_to(outbox, 'amy@example.com', '/confirm_email/')
        browsers = [app.test_client() for _ in range(2)]
        with first_writes_meet(app, r'^UPDATE "?user"? SET email_confirmed_at'):
            responses = at_once(*(lambda b=b: b.post(path) for b in browsers))
        assert [r.status_code for r in responses] == [302, 302]
        said = sorted(
            re.findall(r'role="\w+">(.*?)</p>', b.get('/login').text, re.S)[0] for b in browsers
        )
        assert said == ['Thank you: amy@example.com is confirmed.', ALREADY_CONFIRMED]


def test_the_change_of_address_form_sent_twice_at_once_leaves_one_change_waiting(make_app):
    """Two requests from the same account at once: the newest is the one that counts."""
    app = app_with_zoe(make_app)
    with app.app_context(), recording(app):
        browsers = [sign_in_as(app.test_client(), db.session.get(User, 1)) for _ in range(2)]
        with first_writes_meet(app, r'^UPDATE "?user"? SET password_hash'):
            responses = at_once(
                *(
                    lambda b=b, n=n: change_email(b, f'new{n}@example.com')
                    for n, b in enumerate(browsers)
                )
            )
        assert [r.headers['Location'] for r in responses] == ['/settings', '/settings']
        db.session.expire_all()
        statuses = db.session.scalars(sa.select(EmailChange.status)).all()
        assert sorted(statuses) == [EmailChange.CANCELLED, EmailChange.PENDING]


def test_the_new_password_form_sent_twice_at_once_changes_it_once(make_app):
    """Both requests checked the same current password: the second one is refused."""
    app = app_with_zoe(make_app)
    with app.app_context(), recording(app) as outbox:
        browsers = [sign_in_as(app.test_client(), db.session.get(User, 1)) for _ in range(2)]
        passwords = [NEW_PASSWORD, 'other-Meadow-lantern-43']
        with first_writes_meet(app, r'^UPDATE "?user"? SET password_hash'):
            responses = at_once(
                *(
                    lambda b=b, p=p: change_password(b, new=p)
                    for b, p in zip(browsers, passwords, strict=True)
                )
            )
        locations = sorted(r.headers['Location'] for r in responses)
        assert locations == ['/settings', '/settings/password']
        zoe = user_named('zoe')
        assert [zoe.check_password(p) for p in passwords].count(True) == 1
        assert len(messages_to(outbox, 'zoe@example.com')) == 1


def test_an_undo_pressed_twice_at_once_works_once(make_app):
    app = app_with_zoe(make_app)
    with app.app_context(), recording(app) as outbox:
        thief = sign_in_as(app.test_client(), db.session.get(User, 1))
        change_email(thief, 'new@example.com')
        thief.post(last_link_to(outbox, 'new@example.com', '/confirm_new_email/'))
        undo = last_link_to(outbox, 'zoe@example.com', '/undo_email_change/')
        browsers = [app.test_client() for _ in range(2)]
        with first_writes_meet(app, r'^UPDATE email_change'):
            responses = at_once(*(lambda b=b: b.post(undo) for b in browsers))
        locations = sorted(r.headers['Location'] for r in responses)
        assert locations == ['/login', '/reset_password'], locations
        assert user_named('zoe').email == 'zoe@example.com'


def test_confirm_and_undo_at_once_end_consistent(make_app):
    app = app_with_zoe(make_app)
    with app.app_context(), recording(app) as outbox:
        thief = sign_in_as(app.test_client(), db.session.get(User, 1))
        change_email(thief, 'new@example.com')
        confirm = last_link_to(outbox, 'new@example.com', '/confirm_new_email/')
        undo = last_link_to(outbox, 'zoe@example.com', '/undo_email_change/')
        a, b = app.test_client(), app.test_client()
        with first_writes_meet(app, r'^UPDATE email_change'):
            at_once(lambda: a.post(confirm), lambda: b.post(undo))
        db.session.expire_all()
        status = db.session.scalar(sa.select(EmailChange.status))
        email = user_named('zoe').email
        # Either the undo won (cancelled, address kept), or the confirm won (then the
        # undo link must still work for the owner).
        if status == EmailChange.CONFIRMED:
            assert email == 'new@example.com'
            app.test_client().post(undo)
            assert user_named('zoe').email == 'zoe@example.com'
        else:
            assert status == EmailChange.CANCELLED and email == 'zoe@example.com'


# 5. Redirects and rate limits


@pytest.mark.parametrize(
    'target',
    [
        '/%5C%5Cevil.example',
        '/\\/evil.example',
        '/\t/evil.example',
        '/%09/evil.example',
        '///evil.example',
        '/\u3000/evil.example',
        '/\uff0f\uff0fevil.example',
        'https:evil.example',
        '/.//evil.example',
        '/ /evil.example',
    ],
)
def test_resend_next_never_leaves_the_site(client, make_user, target):
    sign_in_as(client, confirmed(make_user('zoe')))
    response = client.post('/confirm_email/resend', query_string={'next': target})
    location = response.headers['Location']
    # Resolved as a browser does (tabs and newlines dropped, backslashes as slashes).
    cleaned = re.sub(r'[\t\n\r]', '', location).replace('\\', '/')
    assert urlsplit(urljoin(SITE + '/settings', cleaned)).netloc == 'microblog.example.com'


def test_changing_the_address_is_limited_per_account_across_sessions(make_app):
    app = make_app(RATELIMIT_ENABLED=True, RATELIMIT_ACCOUNT_CHANGES='3 per hour')
    with app.app_context():
        zoe = User(username='zoe', email='zoe@example.com', email_confirmed_at=utcnow())
        zoe.set_password(PASSWORD)
        db.session.add(zoe)
        db.session.commit()
        sessions = [sign_in_as(app.test_client(), zoe) for _ in range(2)]
        codes = [
            change_email(sessions[i % 2], 'new@example.com', password='guess').status_code
            for i in range(6)
        ]
        assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429, 429], codes


def test_a_password_guess_budget_is_shared_by_the_two_forms(make_app):
    """Both settings forms check the current password: a thief's guesses at the two
    must count together, else a stolen session gets twice the stated budget."""
    app = make_app(RATELIMIT_ENABLED=True, RATELIMIT_ACCOUNT_CHANGES='3 per hour')
    with app.app_context():
        zoe = User(username='zoe', email='zoe@example.com', email_confirmed_at=utcnow())
        zoe.set_password(PASSWORD)
        db.session.add(zoe)
        db.session.commit()
        thief = sign_in_as(app.test_client(), zoe)
        checked = 0
        for _ in range(3):
            checked += change_email(thief, 'new@example.com', password='guess').status_code == 200
            checked += change_password(thief, current='guess').status_code == 200
        assert checked <= 3, f'{checked} password guesses against a limit of 3'


def test_taken_address_notices_are_limited_like_reset_emails(make_app):
    """Registering with someone's address mails its owner a reset link each time.

    The reset form sends at most RATELIMIT_RESET_PER_ADDRESS_AND_EMAIL (3 per hour) reset
    emails per (client, address); registering with the address is a second door to the
    same reset email, limited only per client (20 per hour by default), and new client
    addresses get 20 more each.
    """
    app = make_app(RATELIMIT_ENABLED=True)
    with app.app_context(), recording(app) as outbox:
        victim = User(username='victim', email='victim@example.com')
        victim.set_password(PASSWORD)
        db.session.add(victim)
        db.session.commit()
        attacker = app.test_client()
        for number in range(30):
            register(attacker, f'probe{number}', 'victim@example.com')
        sent = messages_to(outbox, 'victim@example.com')
        assert len(sent) <= 3, f'{len(sent)} emails with a reset link from one client in a row'


def test_after_undo_no_login_session_of_the_account_survives(client, make_user, outbox, app):
    zoe = confirmed(make_user('zoe'))
    thief_sessions = [sign_in_as(app.test_client(), zoe) for _ in range(3)]
    change_email(thief_sessions[0], 'thief@evil.example')
    thief_sessions[0].post(last_link_to(outbox, 'thief@evil.example', '/confirm_new_email/'))
    app.test_client().post(last_link_to(outbox, 'zoe@example.com', '/undo_email_change/'))
    logins = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(UserSession)
        .where(UserSession.purpose == UserSession.LOGIN)
    )
    assert logins == 0
    for thief in thief_sessions:
        assert thief.get('/settings').status_code == 302


def test_the_made_notice_does_not_send_the_owner_to_a_reset_that_cannot_arrive(
    client, make_user, outbox, app
):
    """Once the change is made, the old address has no account: a reset asked from it
    sends nothing. The notice telling the owner it was moved must not offer that way out
    ("You can also set a new password from this address at any time")."""
    sign_in_as(client, confirmed(make_user('zoe')))
    change_email(client, 'thief@evil.example')
    client.post(last_link_to(outbox, 'thief@evil.example', '/confirm_new_email/'))
    made = [m for m in messages_to(outbox, 'zoe@example.com') if 'was changed from' in m.body]
    assert made
    outbox.clear()
    app.test_client().post('/reset_password_request', data={'email': 'zoe@example.com'})
    reset_arrives = bool(messages_to(outbox, 'zoe@example.com'))
    offers_reset = 'set a new password from this address at any time' in ' '.join(
        made[-1].body.split()
    )
    assert reset_arrives or not offers_reset


# 5. Registering with a known address does the work a new one does


@pytest.mark.parametrize(
    'limits, resets_first',
    [(False, 0), (True, 0), (True, 3)],
    ids=['limits off', 'limits on', 'email limit spent'],
)
def test_registering_a_known_address_runs_what_a_new_one_runs(make_app, limits, resets_first):
    """The same statements, answer and next page whether the address has an account, is
    kept for one that moved away from it (and may undo that), or is free.

    Only the savepoint's end may differ: the database itself finds the address taken.
    With the reset emails' limit for the address spent by this client (three resets
    asked first), a known address's owner is not emailed: a new one must not be either.
    """
    app = app_with_zoe(make_app, MAIL_QUEUE='none', RATELIMIT_ENABLED=limits)
    with app.app_context():
        ann = User(username='ann', email='ann@example.com', email_confirmed_at=utcnow())
        ann.set_password(PASSWORD)
        db.session.add(ann)
        db.session.flush()
        # ann moved from kept@example.com a moment ago: the address stays hers for now.
        db.session.add(
            EmailChange(
                user_id=ann.id,
                old_email='kept@example.com',
                old_email_key='kept@example.com',
                old_confirmed=True,
                new_email='ann@example.com',
                status=EmailChange.CONFIRMED,
                confirmed_at=utcnow(),
            )
        )
        db.session.commit()
    seen = {}
    for number, address in enumerate(('zoe@example.com', 'kept@example.com', 'fresh@example.com')):
        client = app.test_client()
        for _ in range(resets_first):
            client.post('/reset_password_request', data={'email': address})
        with recorded_statements(app) as statements:
            response = register(client, f'newcomer{number}', address)
        page = client.get(response.headers['Location']).text
        seen[address] = {
            'status': response.status_code,
            'location': response.headers['Location'],
            'page': normalized(page).replace(address, 'ADDRESS'),
            'statements': [
                'END SAVEPOINT' if re.match(r'(RELEASE|ROLLBACK TO) SAVEPOINT', s) else s
                for s in statements
            ],
        }
    known, kept, fresh = seen.values()
    assert known['statements'], 'registering stores something'
    assert known == fresh
    assert kept == fresh
