"""Account emails: confirm an address, register without telling who else has, change the
password, change the address (confirmed from the new one, undone from the old one)."""

import re
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app import db
from app.auth.tokens import (
    CONFIRM_EMAIL,
    CONFIRM_NEW_EMAIL,
    UNDO_EMAIL_CHANGE,
    make_link_token,
)
from app.models import EmailChange, User, UserSession, utcnow
from tests.helpers import PASSWORD, at_once, first_writes_meet, links_in, sign_in_as, waiting_change

NEW_PASSWORD = 'quiet-Meadow-lantern-42'
SITE = 'https://microblog.example.com'


def register(client, username='zoe', email='zoe@example.com', password=NEW_PASSWORD):
    data = {'username': username, 'email': email, 'password': password, 'password2': password}
    return client.post('/register', data=data)


def link(message, fragment):
    """The one link containing ``fragment``, the same in the text and the HTML body."""
    text = [url for url in links_in(message.body) if fragment in url]
    html = [url for url in links_in(message.html) if fragment in url]
    assert len(set(text)) == 1 and set(text) == set(html), (text, html)
    assert text[0].startswith(SITE)
    return text[0][len(SITE) :]


def flashes(page):
    return re.findall(r'<p class="flash flash-\w+" role="\w+">(.*?)</p>', page, re.S)


def messages_to(outbox, address):
    return [message for message in outbox.wait() if message.recipients == [address]]


def only_message(outbox, address):
    found = messages_to(outbox, address)
    assert len(found) == 1, [m.subject for m in found]
    return found[0]


def press(client, path):
    """Open a link, then press the button on the page it shows."""
    page = client.get(path)
    assert page.status_code == 200, page.status_code
    assert 'name="csrf_token"' in page.text
    return client.post(path, data={})


def confirmed(user):
    """``user``, with its address confirmed (as after opening the welcome link)."""
    user.email_confirmed_at = utcnow()
    db.session.commit()
    return user


def user_named(name):
    db.session.expire_all()
    return db.session.scalar(sa.select(User).where(User.username == name))


# Confirming the address after registering


def test_registering_sends_a_link_that_confirms_the_address(client, outbox):
    response = register(client)
    assert response.headers['Location'] == '/login'
    assert user_named('zoe').email_confirmed_at is None
    message = only_message(outbox, 'zoe@example.com')
    assert message.subject == '[Microblog] Confirm your email address'
    for body in (message.body, message.html):
        assert 'Dear zoe' in body
        assert 'valid for 3 days' in body
    path = link(message, '/confirm_email/')

    # Opening the link (as a mail scanner does) changes nothing; the button does.
    page = client.get(path)
    assert 'zoe@example.com' in page.text and 'Confirm my address' in page.text
    assert client.get(path).status_code == 200
    assert user_named('zoe').email_confirmed_at is None
    response = client.post(path, data={})
    assert response.headers['Location'] == '/login'
    assert flashes(client.get('/login').text) == ['Thank you: zoe@example.com is confirmed.']
    assert user_named('zoe').email_confirmed_at is not None

    # Used once, it does nothing more.
    again = client.post(path, data={})
    assert flashes(client.get(again.headers['Location']).text) == [
        'Your email address is already confirmed.'
    ]


def test_the_confirmation_needs_the_form_token(make_app, outbox):
    app = make_app(WTF_CSRF_ENABLED=True)
    with app.app_context():
        user = User(username='zoe', email='zoe@example.com')
        user.set_password(PASSWORD)
        db.session.add(user)
        db.session.commit()
        token = make_link_token(
            CONFIRM_EMAIL,
            utcnow() + timedelta(hours=1),
            user_id=user.id,
            email=user.email,
            state=user.confirm_state(),
        )
        client = app.test_client()
        response = client.post(f'/confirm_email/{token}', data={})
        assert response.status_code == 400  # the CSRF page, not a confirmation
        assert user_named('zoe').email_confirmed_at is None


def confirm_token(user, expires_in=3600, **changes):
    claims = {'user_id': user.id, 'email': user.email, 'state': user.confirm_state()}
    claims.update(changes)
    return make_link_token(CONFIRM_EMAIL, utcnow() + timedelta(seconds=expires_in), **claims)


@pytest.mark.parametrize(
    'changes',
    [
        {'expires_in': -1},
        {'state': '0' * 32},
        {'user_id': 999},
        {'user_id': True},
        {'email': 'someone-else@example.com'},
    ],
    ids=['expired', 'wrong state', 'no such account', 'boolean id', 'other address'],
)
def test_confirmation_links_that_must_not_work(client, make_user, changes):
    user = make_user('zoe')
    token = confirm_token(user, **changes)
    for method in (client.get, client.post):
        response = method(f'/confirm_email/{token}')
        assert response.status_code == 302
        assert flashes(client.get(response.headers['Location']).text) == [
            'This confirmation link is invalid or has expired.'
        ]
    assert user_named('zoe').email_confirmed_at is None


@pytest.mark.parametrize(
    ('purpose', 'route', 'message'),
    [
        (
            CONFIRM_NEW_EMAIL,
            '/confirm_new_email/',
            'This confirmation link is invalid or has expired.',
        ),
        (
            UNDO_EMAIL_CHANGE,
            '/undo_email_change/',
            'This link is invalid or has expired, or the change was already undone.',
        ),
    ],
    ids=['new address', 'undo'],
)
def test_an_expired_change_link_changes_nothing(client, make_user, purpose, route, message):
    user = make_user('zoe')
    change = waiting_change(user)
    address = change.new_email if purpose == CONFIRM_NEW_EMAIL else change.old_email
    token = make_link_token(
        purpose, utcnow() - timedelta(seconds=1), change_id=change.id, email=address
    )
    for method in (client.get, client.post):
        response = method(route + token)
        assert response.status_code == 302
        assert flashes(client.get(response.headers['Location']).text) == [message]
    db.session.expire_all()
    assert change.status == EmailChange.PENDING
    assert user_named('zoe').email == 'zoe@example.com'


def test_a_confirmation_link_sent_before_a_key_rotation_still_confirms(make_app):
    old_key = 'old-secret-key-that-is-at-least-32-bytes-long!'
    with make_app(SECRET_KEY=old_key).app_context():
        user = User(username='zoe', email='zoe@example.com')
        user.set_password(PASSWORD)
        db.session.add(user)
        db.session.commit()
        token = confirm_token(user)
    rotated = make_app(
        create_tables=False,
        SECRET_KEY='new-secret-key-that-is-at-least-32-bytes-long!',
        SECRET_KEY_FALLBACKS=[old_key],
    )
    with rotated.app_context():
        client = rotated.test_client()
        response = client.post(f'/confirm_email/{token}')
        assert flashes(client.get(response.headers['Location']).text) == [
            'Thank you: zoe@example.com is confirmed.'
        ]
        assert user_named('zoe').email_confirmed_at is not None


def test_a_confirmation_for_an_address_changed_since_does_not_confirm_the_new_one(
    client, make_user
):
    user = make_user('zoe')
    token = confirm_token(user)
    user.email = 'zoe.new@example.com'
    db.session.commit()
    response = client.post(f'/confirm_email/{token}')
    assert flashes(client.get(response.headers['Location']).text) == [
        'This confirmation link is invalid or has expired.'
    ]
    assert user_named('zoe').email_confirmed_at is None


def test_a_confirmation_opened_by_another_signed_in_account_changes_nothing(client, make_user):
    zoe = make_user('zoe')
    token = confirm_token(zoe)
    sign_in_as(client, make_user('mallory'))
    for method in (client.get, client.post):
        page = method(f'/confirm_email/{token}')
        assert page.status_code == 403
        assert 'This link is for another account' in page.text
        assert 'Nothing was changed' in page.text
    assert user_named('zoe').email_confirmed_at is None


def test_the_owner_signed_in_confirms_and_lands_on_the_settings(client, make_user):
    zoe = make_user('zoe')
    token = confirm_token(zoe)
    sign_in_as(client, zoe)
    response = client.post(f'/confirm_email/{token}')
    assert response.headers['Location'] == '/settings'
    page = client.get('/settings').text
    assert 'Thank you: zoe@example.com is confirmed.' in page
    assert 'badge-ok' in page


def test_an_unconfirmed_account_sees_a_notice_and_can_have_the_link_sent_again(
    client, make_user, outbox
):
    zoe = make_user('zoe')
    sign_in_as(client, zoe)
    profile = client.get('/user/zoe').text
    assert 'is not confirmed yet' in profile
    assert 'action="/confirm_email/resend?next=/user/zoe"' in profile
    response = client.post('/confirm_email/resend?next=/user/zoe')
    assert response.headers['Location'] == '/user/zoe'
    path = link(only_message(outbox, 'zoe@example.com'), '/confirm_email/')
    client.post(path)
    assert 'is not confirmed yet' not in client.get('/user/zoe').text
    # Another account's profile never shows it.
    sign_in_as(client, make_user('mallory'))
    assert 'is not confirmed yet' not in client.get('/user/zoe').text


def test_resend_goes_nowhere_off_the_site(client, make_user):
    sign_in_as(client, make_user('zoe'))
    for target in ('//evil.example', 'https://evil.example/', '/\\evil.example'):
        response = client.post('/confirm_email/resend', query_string={'next': target})
        assert response.headers['Location'] == '/settings'


def test_sending_the_link_again_is_limited_per_account(make_app, outbox):
    app = make_app(RATELIMIT_ENABLED=True, RATELIMIT_CONFIRM_RESEND='2 per hour')
    with app.app_context():
        user = User(username='zoe', email='zoe@example.com')
        user.set_password(PASSWORD)
        db.session.add(user)
        db.session.commit()
        client = sign_in_as(app.test_client(), user)
        statuses = [client.post('/confirm_email/resend').status_code for _ in range(4)]
        assert statuses == [302, 302, 429, 429]
        # Each address can still be sent its own: the limit is the account's.
        other = User(username='ann', email='ann@example.com')
        other.set_password(PASSWORD)
        db.session.add(other)
        db.session.commit()
        assert sign_in_as(app.test_client(), other).post('/confirm_email/resend').status_code == 302


@pytest.mark.parametrize('may_post', [True, False])
def test_whether_an_unconfirmed_account_may_post_is_a_setting(make_app, may_post):
    app = make_app(UNCONFIRMED_CAN_POST=may_post)
    with app.app_context():
        user = User(username='zoe', email='zoe@example.com')
        user.set_password(PASSWORD)
        db.session.add(user)
        db.session.commit()
        client = sign_in_as(app.test_client(), user)
        assert ('name="post"' in client.get('/index').text) is may_post
        response = client.post('/index', data={'post': 'hello'}, follow_redirects=True)
        posted = db.session.scalar(sa.select(sa.func.count()).select_from(sa.table('post')))
        assert posted == (1 if may_post else 0)
        if not may_post:
            assert 'Confirm your email address to post' in response.text
            user.email_confirmed_at = utcnow()
            db.session.commit()
            client.post('/index', data={'post': 'hello'})
            assert db.session.scalar(sa.select(sa.func.count()).select_from(sa.table('post'))) == 1


# Registering with an address that has an account


def test_registering_with_a_taken_address_answers_the_same_and_tells_its_owner(
    client, make_user, outbox
):
    make_user('susan', email='susan@example.com')
    response = register(client, 'newcomer', 'SUSAN@Example.com')
    assert response.headers['Location'] == '/login'
    assert user_named('newcomer') is None
    message = only_message(outbox, 'susan@example.com')
    assert message.subject == '[Microblog] You already have an account'
    for body in (message.body, message.html):
        assert 'Dear susan' in body
        assert 'no new account was made' in ' '.join(body.split())
    # Its reset link works, and no confirmation link was sent to anyone.
    assert not [m for m in outbox if '/confirm_email/' in m.body]
    path = link(message, '/reset_password/')
    assert client.get(path).headers['Location'] == '/reset_password'
    client.post('/reset_password', data={'password': NEW_PASSWORD, 'password2': NEW_PASSWORD})
    assert user_named('susan').check_password(NEW_PASSWORD)


def test_registering_with_a_taken_address_emails_its_owner_within_the_reset_limit(make_app, outbox):
    app = make_app(RATELIMIT_ENABLED=True, RATELIMIT_RESET_PER_ADDRESS_AND_EMAIL='2 per hour')
    with app.app_context():
        user = User(username='susan', email='susan@example.com')
        user.set_password(PASSWORD)
        db.session.add(user)
        db.session.commit()
    client = app.test_client()
    statuses = [register(client, f'newcomer{n}', 'susan@example.com').status_code for n in range(4)]
    assert statuses == [302] * 4  # the same answer past the limit: it is silent
    with app.app_context():
        assert len(messages_to(outbox, 'susan@example.com')) == 2


def test_the_same_address_registered_twice_at_once(make_app, outbox):
    app = make_app()
    clients = [app.test_client() for _ in range(2)]
    with first_writes_meet(app, r'^INSERT INTO "?user"? '):
        responses = at_once(
            *(
                lambda c=c, name=name: register(c, name, 'zoe@example.com')
                for c, name in zip(clients, ('zoe', 'zed'), strict=True)
            )
        )
    assert [response.status_code for response in responses] == [302, 302]
    with app.app_context():
        names = db.session.scalars(sa.select(User.username)).all()
        assert len(names) == 1
        subjects = sorted(message.subject for message in messages_to(outbox, 'zoe@example.com'))
        assert subjects == [
            '[Microblog] Confirm your email address',
            '[Microblog] You already have an account',
        ]


# Changing the password


def change_password(client, current=PASSWORD, new=NEW_PASSWORD, repeat=None):
    data = {'current_password': current, 'password': new, 'password2': repeat or new}
    return client.post('/settings/password', data=data)


def test_changing_the_password_signs_out_the_other_sessions_and_says_so(
    client, make_app, make_user, outbox, app
):
    zoe = make_user('zoe')
    other_browser = sign_in_as(app.test_client(), zoe)
    sign_in_as(client, zoe)
    response = change_password(client)
    assert response.headers['Location'] == '/settings'
    page = client.get('/settings').text
    assert flashes(page) == ['Your password has been changed. 1 other session was signed out.']
    assert user_named('zoe').check_password(NEW_PASSWORD)
    assert client.get('/index').status_code == 200  # this browser stays in
    assert other_browser.get('/index').status_code == 302  # the other one is out
    message = only_message(outbox, 'zoe@example.com')
    assert message.subject == '[Microblog] Your password was changed'
    assert 'every other session' in message.body
    # Whoever did it knew the password and was signed in: nothing says they read the mail.
    for body in (message.body, message.html):
        body = ' '.join(body.split())
        assert 'someone who knew your password changed it while signed in' in body
        assert 'access to your email' not in body


@pytest.mark.parametrize(
    ('fields', 'error'),
    [
        ({'current': 'not-my-password'}, 'That is not your current password.'),
        ({'current': ''}, 'This field is required.'),
        ({'new': 'short'}, 'Use at least 8 characters.'),
        ({'new': PASSWORD}, 'Choose a password you have not used for this account.'),
        ({'repeat': 'something-else-Entirely-7'}, 'Passwords must match.'),
        ({'new': 'zoe@example.com1'}, None),  # too like the account: zxcvbn's own words
    ],
)
def test_a_password_change_that_must_not_happen(client, make_user, outbox, fields, error):
    sign_in_as(client, make_user('zoe'))
    page = change_password(client, **fields)
    assert page.status_code == 200
    if error:
        assert error in page.text
    assert 'class="error"' in page.text
    assert user_named('zoe').check_password(PASSWORD)
    assert outbox.wait() == []


def test_a_reset_link_sent_before_a_password_change_is_dead(client, make_user):
    zoe = make_user('zoe')
    token = zoe.get_reset_password_token()
    sign_in_as(client, zoe)
    change_password(client)
    client.post('/logout')
    response = client.get(f'/reset_password/{token}')
    assert response.headers['Location'] == '/reset_password_request'


def test_password_changes_are_limited_per_account(make_app):
    app = make_app(RATELIMIT_ENABLED=True, RATELIMIT_ACCOUNT_CHANGES='3 per hour')
    with app.app_context():
        user = User(username='zoe', email='zoe@example.com')
        user.set_password(PASSWORD)
        db.session.add(user)
        db.session.commit()
        client = sign_in_as(app.test_client(), user)
        statuses = [change_password(client, current=f'guess-{n}').status_code for n in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        assert client.get('/settings/password').status_code == 200  # looking is not limited


# Changing the address


def change_email(client, address, password=PASSWORD):
    return client.post('/settings/email', data={'email': address, 'current_password': password})


def test_changing_the_address_confirm_from_the_new_one_and_the_old_one_is_told(
    client, make_user, outbox
):
    zoe = confirmed(make_user('zoe', email='zoe@old.example'))
    sign_in_as(client, zoe)
    response = change_email(client, 'Zoe@New.Example')
    assert response.headers['Location'] == '/settings'
    settings = client.get('/settings').text
    assert 'We sent a link to Zoe@new.example.' in settings
    assert 'Waiting for you to open the link sent to' in settings
    assert settings.count('password resets included') == 1  # said once, not in the flash too

    # Nothing has changed yet: a reset still goes to the old address only.
    assert user_named('zoe').email == 'zoe@old.example'
    confirm = only_message(outbox, 'Zoe@new.example')
    assert confirm.subject == '[Microblog] Confirm your new email address'
    notice = only_message(outbox, 'zoe@old.example')
    assert notice.subject == '[Microblog] A change of your email address'
    assert 'asked to change its email address' in ' '.join(notice.body.split())
    assert 'zoe@old.example' in notice.body and 'Zoe@new.example' in notice.body
    undo_path = link(notice, '/undo_email_change/')
    outbox.clear()
    anonymous = client.application.test_client()
    for typed in ('zoe@old.example', 'zoe@new.example'):
        anonymous.post('/reset_password_request', data={'email': typed})
    assert [m.recipients for m in outbox.wait()] == [['zoe@old.example']]

    # The link from the new address moves the account, and the old one is told again.
    outbox.clear()
    path = link(confirm, '/confirm_new_email/')
    page = client.get(path)
    assert 'Use Zoe@new.example' in page.text
    response = client.post(path)
    assert response.headers['Location'] == '/settings'
    zoe = user_named('zoe')
    assert zoe.email == 'Zoe@new.example' and zoe.email_confirmed_at is not None
    made = only_message(outbox, 'zoe@old.example')
    assert 'was changed from' in ' '.join(made.body.split())
    assert client.post(path).headers['Location'] == '/settings'
    assert 'This confirmation link is invalid or has expired.' in client.get('/settings').text

    # Resets now go to the new address, and the old address finds no account.
    outbox.clear()
    for typed in ('zoe@old.example', 'ZOE@NEW.EXAMPLE'):
        anonymous.post('/reset_password_request', data={'email': typed})
    assert [m.recipients for m in outbox.wait()] == [['Zoe@new.example']]
    assert undo_path  # still in the first notice: see the undo tests


def test_a_change_of_address_needs_the_current_password(client, make_user, outbox):
    sign_in_as(client, make_user('zoe'))
    page = change_email(client, 'zoe@new.example', password='not-my-password')
    assert 'That is not your current password.' in page.text
    same = change_email(client, 'ZOE@example.com')
    assert 'That is already your address.' in same.text
    bad = change_email(client, 'zoe@new.example\n@evil.example')
    assert bad.status_code == 200 and 'class="error"' in bad.text
    assert outbox.wait() == []
    assert db.session.scalar(sa.select(sa.func.count()).select_from(EmailChange)) == 0


def test_moving_to_an_address_another_account_has_answers_the_same(client, make_user, outbox, app):
    make_user('susan', email='susan@example.com')
    answers = []
    for name, address in (('zoe', 'SUSAN@example.com'), ('ann', 'free@example.com')):
        browser = sign_in_as(app.test_client(), make_user(name))
        response = change_email(browser, address)
        page = browser.get(response.headers['Location']).text
        page = re.sub(r'value="[\w-]+\.[\w-]+\.[\w-]+"', '', page)  # CSRF tokens
        answers.append(page.replace(address, 'ADDRESS').replace(name, 'NAME'))
    assert answers[0] == answers[1]
    # The owner of the taken address is told, with no link that could move anything.
    taken = only_message(outbox, 'SUSAN@example.com')
    assert 'already belongs to another Microblog account' in ' '.join(taken.body.split())
    assert not [url for url in links_in(taken.body) if 'confirm' in url]
    assert '/confirm_new_email/' in only_message(outbox, 'free@example.com').body


def test_an_address_taken_before_the_link_is_used_stays_with_its_account(client, make_user, outbox):
    sign_in_as(client, make_user('zoe'))
    change_email(client, 'wanted@example.com')
    path = link(only_message(outbox, 'wanted@example.com'), '/confirm_new_email/')
    make_user('quick', email='wanted@example.com')
    client.post(path)
    assert 'belongs to another account now' in client.get('/settings').text
    assert user_named('zoe').email == 'zoe@example.com'


def test_a_newer_request_or_a_new_password_ends_a_waiting_change(client, make_user, outbox):
    sign_in_as(client, make_user('zoe'))
    change_email(client, 'first@example.com')
    first = link(only_message(outbox, 'first@example.com'), '/confirm_new_email/')
    change_email(client, 'second@example.com')
    second = link(only_message(outbox, 'second@example.com'), '/confirm_new_email/')
    client.post(first)
    assert user_named('zoe').email == 'zoe@example.com'
    change_password(client)
    client.post(second)
    assert user_named('zoe').email == 'zoe@example.com'
    statuses = db.session.scalars(sa.select(EmailChange.status).order_by(EmailChange.id)).all()
    assert statuses == ['cancelled', 'cancelled']


def test_a_reset_ends_a_waiting_change(client, make_user, outbox):
    zoe = make_user('zoe')
    sign_in_as(client, zoe)
    change_email(client, 'thief@example.com')
    stolen = link(only_message(outbox, 'thief@example.com'), '/confirm_new_email/')
    owner = client.application.test_client()
    owner.get(f'/reset_password/{user_named("zoe").get_reset_password_token()}')
    owner.post('/reset_password', data={'password': NEW_PASSWORD, 'password2': NEW_PASSWORD})
    thief = client.application.test_client()
    thief.post(stolen)
    assert user_named('zoe').email == 'zoe@example.com'


def test_the_settings_cancel_a_waiting_change(client, make_user, outbox):
    sign_in_as(client, make_user('zoe'))
    change_email(client, 'new@example.com')
    path = link(only_message(outbox, 'new@example.com'), '/confirm_new_email/')
    client.post('/settings/email/cancel')
    assert 'Waiting for you' not in client.get('/settings').text
    client.post(path)
    assert user_named('zoe').email == 'zoe@example.com'


def test_a_new_address_link_opened_by_another_signed_in_account_changes_nothing(
    client, make_user, outbox
):
    sign_in_as(client, make_user('zoe'))
    change_email(client, 'new@example.com')
    path = link(only_message(outbox, 'new@example.com'), '/confirm_new_email/')
    other = sign_in_as(client.application.test_client(), make_user('mallory'))
    assert other.post(path).status_code == 403
    assert user_named('zoe').email == 'zoe@example.com'


def request_change(client, make_user, outbox, new='thief@example.com'):
    """zoe, signed in on ``client``, asks to move to ``new``: the two links that sends."""
    sign_in_as(client, confirmed(make_user('zoe', email='zoe@example.com')))
    change_email(client, new)
    confirm = link(only_message(outbox, new), '/confirm_new_email/')
    undo = link(only_message(outbox, 'zoe@example.com'), '/undo_email_change/')
    outbox.clear()
    return confirm, undo


def test_undo_after_the_change_puts_the_address_back_and_asks_for_a_new_password(
    client, make_user, outbox, app
):
    confirm, undo = request_change(client, make_user, outbox)
    client.post(confirm)  # the thief, signed in, confirms
    assert user_named('zoe').email == 'thief@example.com'

    owner = app.test_client()
    page = owner.get(undo)
    assert 'Put back zoe@example.com' in page.text
    response = owner.post(undo)
    assert response.headers['Location'] == '/reset_password'
    zoe = user_named('zoe')
    assert zoe.email == 'zoe@example.com' and zoe.email_confirmed_at is not None
    assert client.get('/index').status_code == 302  # the thief's session is over
    form = owner.get('/reset_password')
    assert 'Your email address is zoe@example.com again' in form.text
    owner.post('/reset_password', data={'password': NEW_PASSWORD, 'password2': NEW_PASSWORD})
    assert user_named('zoe').check_password(NEW_PASSWORD)

    # The undo link works once.
    again = app.test_client().post(undo)
    assert again.headers['Location'] == '/login'
    assert db.session.scalar(sa.select(EmailChange.status)) == 'undone'


def test_undo_before_the_change_cancels_it(client, make_user, outbox, app):
    confirm, undo = request_change(client, make_user, outbox)
    owner = app.test_client()
    assert 'Cancel the change' in owner.get(undo).text
    assert owner.post(undo).headers['Location'] == '/reset_password'
    client.post(confirm)
    assert user_named('zoe').email == 'zoe@example.com'
    sessions = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(UserSession)
        .where(UserSession.purpose == UserSession.LOGIN)
    )
    assert sessions == 0


def test_undo_takes_back_every_change_made_since(client, make_user, outbox, app):
    confirm, undo = request_change(client, make_user, outbox)
    client.post(confirm)
    # Moved on again, to another address: the notice of that one went to the first.
    change_email(client, 'third@example.com')
    third = link(only_message(outbox, 'third@example.com'), '/confirm_new_email/')
    thief_undo = link(only_message(outbox, 'thief@example.com'), '/undo_email_change/')
    client.post(third)
    assert user_named('zoe').email == 'third@example.com'
    response = app.test_client().post(undo)
    assert response.headers['Location'] == '/reset_password'
    assert user_named('zoe').email == 'zoe@example.com'
    statuses = db.session.scalars(sa.select(EmailChange.status).order_by(EmailChange.id)).all()
    assert statuses == ['undone', 'undone']
    # The link the second notice sent to the thief's first address is spent with it.
    assert app.test_client().post(thief_undo).headers['Location'] == '/login'
    assert user_named('zoe').email == 'zoe@example.com'


def test_an_old_address_is_kept_for_its_account_while_the_move_can_be_undone(
    client, make_user, outbox, app
):
    confirm, undo = request_change(client, make_user, outbox)
    client.post(confirm)
    outbox.wait().clear()
    # Registering it answers as usual, and makes nothing.
    stranger = app.test_client()
    assert register(stranger, 'squatter', 'ZOE@example.com').headers['Location'] == '/login'
    assert user_named('squatter') is None
    # Moving another account to it asks as usual; the address is told, nothing moves.
    other = sign_in_as(app.test_client(), confirmed(make_user('ann')))
    change_email(other, 'zoe@example.com')
    told = only_message(outbox, 'zoe@example.com')
    assert 'already belongs to another Microblog account' in ' '.join(told.body.split())
    # The account it was kept for may move back to it.
    assert app.test_client().post(undo).headers['Location'] == '/reset_password'
    assert user_named('zoe').email == 'zoe@example.com'


def test_a_link_minted_before_an_address_was_kept_cannot_take_it(client, make_user, outbox, app):
    """Another account's link to the address, sent while it was free, is refused once the
    address is kept: taking it would leave the undo nothing to put back."""
    confirm, undo = request_change(client, make_user, outbox)
    ann = confirmed(make_user('ann'))
    change = waiting_change(ann, new='zoe@example.com')  # asked while the address was free
    later = utcnow() + timedelta(hours=1)
    token = make_link_token(CONFIRM_NEW_EMAIL, later, change_id=change.id, email=change.new_email)
    client.post(confirm)  # zoe's account moves away: zoe@example.com is kept for it
    response = sign_in_as(app.test_client(), ann).post(f'/confirm_new_email/{token}')
    assert response.headers['Location'] == '/settings'
    assert user_named('ann').email == 'ann@example.com'
    assert app.test_client().post(undo).headers['Location'] == '/reset_password'
    assert user_named('zoe').email == 'zoe@example.com'


def test_an_address_is_free_again_once_the_move_can_no_longer_be_undone(
    client, make_user, outbox, app
):
    confirm, _ = request_change(client, make_user, outbox)
    client.post(confirm)
    change = db.session.scalar(sa.select(EmailChange))
    change.confirmed_at = utcnow() - timedelta(seconds=app.config['EMAIL_CHANGE_UNDO_LIFETIME'] + 1)
    db.session.commit()
    register(app.test_client(), 'newowner', 'zoe@example.com')
    assert user_named('newowner').email == 'zoe@example.com'


def test_a_never_confirmed_old_address_is_told_but_cannot_undo(client, make_user, outbox, app):
    zoe = make_user('zoe', email='zoe@typo.example')  # never confirmed
    sign_in_as(client, zoe)
    change_email(client, 'zoe@right.example')
    notice = only_message(outbox, 'zoe@typo.example')
    assert '/undo_email_change/' not in notice.body + notice.html
    assert 'cancels the change' in ' '.join(notice.body.split())
    client.post(link(only_message(outbox, 'zoe@right.example'), '/confirm_new_email/'))
    change = db.session.scalar(sa.select(EmailChange))
    token = make_link_token(
        UNDO_EMAIL_CHANGE,
        utcnow() + timedelta(hours=1),
        change_id=change.id,
        email=change.old_email,
    )
    assert app.test_client().post(f'/undo_email_change/{token}').headers['Location'] == '/login'
    assert user_named('zoe').email == 'zoe@right.example'


def test_undo_when_the_old_address_was_taken_meanwhile(client, make_user, outbox, app):
    confirm, undo = request_change(client, make_user, outbox)
    client.post(confirm)
    make_user('squatter', email='zoe@example.com')
    response = app.test_client().post(undo)
    assert response.headers['Location'] == '/reset_password_request'
    assert user_named('zoe').email == 'thief@example.com'


# Links of one kind are never taken for another


def tokens_for(user, change):
    later = utcnow() + timedelta(hours=1)
    return {
        'reset': user.get_reset_password_token(),
        'confirm': confirm_token(user),
        'new': make_link_token(
            CONFIRM_NEW_EMAIL, later, change_id=change.id, email=change.new_email
        ),
        'undo': make_link_token(
            UNDO_EMAIL_CHANGE, later, change_id=change.id, email=change.old_email
        ),
    }


ROUTES = {
    'reset': '/reset_password/{}',
    'confirm': '/confirm_email/{}',
    'new': '/confirm_new_email/{}',
    'undo': '/undo_email_change/{}',
}


def test_a_link_token_is_made_only_for_a_purpose_that_is_read_somewhere(app):
    with pytest.raises(ValueError, match="no such purpose: 'reset_password'"):
        make_link_token('reset_password', utcnow() + timedelta(hours=1), user_id=1)


@pytest.mark.parametrize('route', ROUTES)
def test_a_link_of_one_kind_is_refused_as_any_other(client, make_user, route):
    user = make_user('zoe')
    change = waiting_change(user)
    tokens = tokens_for(user, change)
    for kind, token in tokens.items():
        if kind == route:
            continue
        response = client.post(ROUTES[route].format(token))
        assert response.status_code == 302, (kind, route)
        assert response.headers['Location'] in ('/login', '/reset_password_request')
    db.session.expire_all()
    assert user.email == 'zoe@example.com' and user.email_confirmed_at is None
    assert change.status == EmailChange.PENDING
    # Each token does work at its own route.
    assert client.get(ROUTES[route].format(tokens[route])).status_code in (200, 302)
    if route != 'reset':
        assert client.get(ROUTES[route].format(tokens[route])).status_code == 200


@pytest.mark.parametrize(
    'token',
    ['', 'x', 'a.b.c', 'x' * 10_000, '\x00', 'e30.e30.'],
)
@pytest.mark.parametrize('route', ['confirm', 'new', 'undo'])
def test_junk_tokens_get_a_clean_answer(client, route, token):
    path = ROUTES[route].format(token)
    for method in (client.get, client.post):
        response = method(path)
        assert response.status_code in (302, 400, 404)


# The settings page


def test_the_settings_gather_the_address_the_password_and_the_sessions(client, make_user, app):
    zoe = make_user('zoe')
    sign_in_as(app.test_client(), zoe)
    sign_in_as(client, zoe)
    page = client.get('/settings')
    assert page.status_code == 200
    assert page.headers['Cache-Control'] == 'private, no-store'
    for text in (
        'zoe@example.com',
        'not confirmed',
        'Send the link again',
        'href="/settings/email"',
        'href="/settings/password"',
        'href="/edit_profile"',
        '(this browser)',
        'Sign out all other sessions',
    ):
        assert text in page.text, text
    assert client.get('/settings', follow_redirects=False).status_code == 200
    assert app.test_client().get('/settings').status_code == 302  # signed out: to the login


def test_a_token_with_the_right_claims_but_another_purpose_is_refused(client, make_user):
    user = make_user('zoe')
    change = waiting_change(user)
    later = utcnow() + timedelta(hours=1)
    # The claims the new address's link has, signed as an undo link.
    forged = make_link_token(UNDO_EMAIL_CHANGE, later, change_id=change.id, email='new@example.com')
    client.post(f'/confirm_new_email/{forged}')
    assert user_named('zoe').email == 'zoe@example.com'


def test_a_reset_link_sent_to_the_old_address_dies_with_the_change(client, make_user, outbox, app):
    confirm, _ = request_change(client, make_user, outbox)
    old_link = user_named('zoe').get_reset_password_token()
    client.post(confirm)
    stranger = app.test_client()
    response = stranger.get(f'/reset_password/{old_link}')
    assert response.headers['Location'] == '/reset_password_request'


def test_a_new_address_link_is_dead_once_the_account_has_another_address(client, make_user, outbox):
    confirm, _ = request_change(client, make_user, outbox)
    # The address changed by other means (an admin, say) while the link waited.
    user_named('zoe').email = 'admin-set@example.com'
    db.session.commit()
    client.post(confirm)
    assert user_named('zoe').email == 'admin-set@example.com'


def test_a_change_asked_with_a_password_changed_meanwhile_is_refused(
    client, make_user, outbox, app, monkeypatch
):
    """The owner sets a new password between the thief's form check and its request's write."""
    from app.auth import account

    zoe = confirmed(make_user('zoe'))
    thief = sign_in_as(client, zoe)
    owner = sign_in_as(app.test_client(), zoe)
    checked = account.ChangeEmailForm.validate_on_submit

    def then_the_owner_changes_the_password(form):
        valid = checked(form)
        worker = threading.Thread(target=change_password, args=(owner,))
        worker.start()
        worker.join(30)
        return valid

    monkeypatch.setattr(
        account.ChangeEmailForm, 'validate_on_submit', then_the_owner_changes_the_password
    )
    response = change_email(thief, 'evil@evil.example')
    assert response.headers['Location'] == '/settings/email'
    monkeypatch.undo()
    assert user_named('zoe').check_password(NEW_PASSWORD)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(EmailChange)) == 0


def test_the_account_emails_are_in_the_account_language(client, make_user, outbox, app):
    """Registered from a Chinese page: the confirmation is in Chinese, and so is every
    email about the account, whoever's browser asks (here, an English one)."""
    chinese = {'Accept-Language': 'zh-CN,zh;q=0.9'}
    data = {'username': 'li', 'email': 'li@example.com'}
    data |= {'password': NEW_PASSWORD, 'password2': NEW_PASSWORD}
    client.post('/register', data=data, headers=chinese)
    welcome = only_message(outbox, 'li@example.com')
    assert welcome.subject == '[Microblog] 确认您的邮箱地址'
    assert '有效期为 3 天' in welcome.body and '有效期为 3 天' in welcome.html
    client.post(link(welcome, '/confirm_email/'), headers=chinese)
    outbox.clear()
    english = sign_in_as(app.test_client(), user_named('li'))
    english.post(
        '/settings/email',
        data={'email': 'li@new.example', 'current_password': NEW_PASSWORD},
        headers={'Accept-Language': 'en'},
    )
    subjects = sorted(message.subject for message in outbox.wait())
    assert subjects == ['[Microblog] 您的邮箱地址有变更', '[Microblog] 确认您的新邮箱地址']
    notice = only_message(outbox, 'li@example.com')
    assert '/undo_email_change/' in notice.body and '有效期为 7 天' in notice.body
