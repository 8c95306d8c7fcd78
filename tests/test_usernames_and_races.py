"""Usernames are unique ignoring case, and no hostile or concurrent request gets a 500 (issue 11).

Each race is made to happen, not hoped for: the requests' first writes wait for each
other at a barrier (an engine event), so both have decided what to write before either
writes it. The tests run on SQLite, and on PostgreSQL when TEST_DATABASE_URL is set.
"""

import re

import pytest
import sqlalchemy as sa

from app import db
from app.auth.forms import USERNAME_MESSAGE
from app.models import User, followers
from tests.helpers import PASSWORD, at_once, first_writes_meet, sign_in_as

TAKEN = 'Please use a different username.'
NEW_PASSWORD = 'quiet-Meadow-lantern-42'

# Names that are not 'bob', and must not become it, nor any other name, silently.
HOSTILE_NAMES = [
    ('trailing newline', 'Bob\n'),
    ('trailing newline, same case', 'bob\n'),
    ('trailing CR LF', 'Bob\r\n'),
    ('leading newline', '\nbob'),
    ('trailing space', 'bob '),
    ('leading space', ' bob'),
    ('tab', 'bob\t'),
    ('inner space', 'bo b'),
    ('non-ASCII letter', 'böb'),
    ('Kelvin sign, lower-cases to k', '\u212aate'),
]


def error_messages(page):
    return re.findall(r'<p class="error"[^>]*>(.*?)</p>', page)


def usernames():
    return sorted(db.session.scalars(sa.select(User.username)))


def registration(username, email=None):
    email = email or 'newcomer@example.com'
    return {
        'username': username,
        'email': email,
        'password': NEW_PASSWORD,
        'password2': NEW_PASSWORD,
    }


def logged_in_client(app, username):
    """A test client with the session of ``username``, as after a login."""
    client = app.test_client()
    with app.app_context():
        user = db.session.scalar(sa.select(User).where(User.username == username))
        sign_in_as(client, user)
    return client


def add_users(app, *names):
    with app.app_context():
        for name in names:
            user = User(username=name, email=f'{name}@example.com')
            user.set_password(PASSWORD)
            db.session.add(user)
        db.session.commit()


# Validation: the whole name must match, and nothing is stripped


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    'name', [row[1] for row in HOSTILE_NAMES], ids=[r[0] for r in HOSTILE_NAMES]
)
def test_register_refuses_a_name_with_anything_around_it(client, make_user, name):
    make_user('bob')
    response = client.post('/register', data=registration(name))
    assert response.status_code == 200
    assert error_messages(response.text) == [USERNAME_MESSAGE]
    assert usernames() == ['bob']


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    'name', [row[1] for row in HOSTILE_NAMES], ids=[r[0] for r in HOSTILE_NAMES]
)
def test_edit_profile_refuses_a_name_with_anything_around_it(app, make_user, name):
    make_user('bob')
    make_user('susan')
    client = logged_in_client(app, 'susan')
    response = client.post('/edit_profile', data={'username': name, 'about_me': ''})
    assert response.status_code == 200
    assert error_messages(response.text) == [USERNAME_MESSAGE]
    assert usernames() == ['bob', 'susan']


@pytest.mark.sqlite_only
def test_a_name_free_of_anything_around_it_is_taken_as_typed(client):
    assert client.post('/register', data=registration('Bob.Smith-2_x')).status_code == 302
    assert usernames() == ['Bob.Smith-2_x']


@pytest.mark.parametrize('path', ['/register', '/edit_profile'])
def test_a_case_duplicate_gets_the_form_message(app, make_user, path):
    make_user('bob')
    make_user('susan')
    if path == '/register':
        response = app.test_client().post('/register', data=registration('BOB'))
    else:
        client = logged_in_client(app, 'susan')
        response = client.post('/edit_profile', data={'username': 'BOB', 'about_me': ''})
    assert response.status_code == 200
    assert error_messages(response.text) == [TAKEN]
    assert usernames() == ['bob', 'susan']


# The database refuses a case-duplicate, whatever code path writes it


@pytest.mark.parametrize('name', ['BOB', 'Bob', 'bOb'])
def test_the_database_refuses_a_case_duplicate(app, make_user, name):
    make_user('bob')
    db.session.add(User(username=name, email='other@example.com'))
    with pytest.raises(sa.exc.IntegrityError, match='ix_user_username_lower'):
        db.session.commit()
    db.session.rollback()
    assert usernames() == ['bob']


def test_the_database_refuses_a_rename_into_a_case_duplicate(app, make_user):
    make_user('bob')
    susan = make_user('susan')
    susan.username = 'BoB'
    with pytest.raises(sa.exc.IntegrityError, match='ix_user_username_lower'):
        db.session.commit()
    db.session.rollback()
    assert usernames() == ['bob', 'susan']


def test_login_finds_the_one_account_whatever_the_case(client, make_user):
    make_user('bob')
    for typed in ('bob', 'BOB', 'Bob'):
        response = client.post('/login', data={'username': typed, 'password': PASSWORD})
        assert response.status_code == 302
        client.post('/logout')


# Races


@pytest.fixture
def race_app(make_app):
    """An app with no app context pushed: each thread's requests push their own."""
    return make_app()


def test_the_same_registration_twice_at_once(race_app):
    clients = [race_app.test_client() for _ in range(2)]
    data = registration('zoe', 'zoe@example.com')
    with first_writes_meet(race_app, r'^INSERT INTO "?user"? '):
        responses = at_once(*(lambda c=c: c.post('/register', data=data) for c in clients))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200, 302]
    [refused] = [response for response in responses if response.status_code == 200]
    assert TAKEN in error_messages(refused.text)
    with race_app.app_context():
        assert usernames() == ['zoe']


def test_two_names_differing_in_case_registered_at_once(race_app):
    clients = [race_app.test_client() for _ in range(2)]
    forms = [registration('zoe', 'zoe@example.com'), registration('ZOE', 'zoe2@example.com')]
    with first_writes_meet(race_app, r'^INSERT INTO "?user"? '):
        responses = at_once(
            *(
                lambda c=c, f=f: c.post('/register', data=f)
                for c, f in zip(clients, forms, strict=True)
            )
        )
    assert sorted(response.status_code for response in responses) == [200, 302]
    with race_app.app_context():
        assert len(usernames()) == 1


def test_two_people_taking_the_same_name_at_once(race_app):
    add_users(race_app, 'susan', 'john')
    clients = [logged_in_client(race_app, name) for name in ('susan', 'john')]
    data = {'username': 'Sky', 'about_me': ''}
    with first_writes_meet(race_app, r'^UPDATE "?user"? SET username'):
        responses = at_once(*(lambda c=c: c.post('/edit_profile', data=data) for c in clients))
    assert sorted(response.status_code for response in responses) == [200, 302]
    [refused] = [response for response in responses if response.status_code == 200]
    assert TAKEN in error_messages(refused.text)
    with race_app.app_context():
        names = usernames()
    assert len(names) == 2 and 'Sky' in names and ({'susan', 'john'} & set(names))


def follower_pairs(app):
    with app.app_context():
        return db.session.execute(sa.select(followers)).all()


@pytest.mark.parametrize('action', ['follow', 'unfollow'])
def test_the_same_follow_or_unfollow_twice_at_once(race_app, action):
    add_users(race_app, 'susan', 'john')
    with race_app.app_context():
        susan, john = (
            db.session.scalar(sa.select(User).where(User.username == name))
            for name in ('susan', 'john')
        )
        if action == 'unfollow':
            susan.follow(john)
            db.session.commit()
        expected = [] if action == 'unfollow' else [(susan.id, john.id)]
    clients = [logged_in_client(race_app, 'susan') for _ in range(2)]
    with first_writes_meet(race_app, r'^(INSERT INTO|DELETE FROM) "?followers'):
        responses = at_once(*(lambda c=c: c.post(f'/{action}/john') for c in clients))
    assert [response.status_code for response in responses] == [302, 302]
    assert {response.headers['Location'] for response in responses} == {'/user/john'}
    assert [tuple(pair) for pair in follower_pairs(race_app)] == expected


def test_follow_and_unfollow_stay_idempotent_one_after_another(app, make_user):
    susan, john = make_user('susan'), make_user('john')
    for _ in range(2):
        susan.follow(john)
        db.session.commit()
    assert susan.following_count() == 1
    for _ in range(2):
        susan.unfollow(john)
        db.session.commit()
    assert susan.following_count() == 0
