"""The model's face: passwords, avatars, the follow graph and the followed-posts query."""

import re
from datetime import UTC, datetime, timedelta

import jwt
import sqlalchemy as sa

from app import db
from app.models import Post, User, decode_signed, utcnow


def test_password_hashing(app):
    user = User(username='susan', email='susan@example.com')
    user.set_password('cat')
    assert user.password_hash != 'cat'
    assert not user.check_password('dog')
    assert user.check_password('cat')


def test_avatar(app):
    user = User(id=7, username='john', email='john@example.com')
    url = user.avatar(128)
    assert re.fullmatch(r'https://microblog\.example\.com/avatar/[0-9a-f]{32}\.svg', url)
    assert user.avatar(48) == url  # one picture, drawn at any size


def test_follow(app):
    u1 = User(username='john', email='john@example.com')
    u2 = User(username='susan', email='susan@example.com')
    db.session.add_all([u1, u2])
    db.session.commit()
    assert db.session.scalars(u1.following.select()).all() == []
    assert db.session.scalars(u1.followers.select()).all() == []

    u1.follow(u2)
    db.session.commit()
    assert u1.is_following(u2)
    assert not u2.is_following(u1)
    assert u1.following_count() == 1
    assert u2.followers_count() == 1
    assert db.session.scalars(u1.following.select()).one().username == 'susan'
    assert db.session.scalars(u2.followers.select()).one().username == 'john'

    u1.follow(u2)  # following twice changes nothing
    db.session.commit()
    assert u1.following_count() == 1

    u1.unfollow(u2)
    db.session.commit()
    assert not u1.is_following(u2)
    assert u1.following_count() == 0
    assert u2.followers_count() == 0


def test_follow_posts(app):
    u1 = User(username='john', email='john@example.com')
    u2 = User(username='susan', email='susan@example.com')
    u3 = User(username='mary', email='mary@example.com')
    u4 = User(username='david', email='david@example.com')
    db.session.add_all([u1, u2, u3, u4])
    now = utcnow()
    p1 = Post(body='post from john', author=u1, timestamp=now + timedelta(seconds=1))
    p2 = Post(body='post from susan', author=u2, timestamp=now + timedelta(seconds=4))
    p3 = Post(body='post from mary', author=u3, timestamp=now + timedelta(seconds=3))
    p4 = Post(body='post from david', author=u4, timestamp=now + timedelta(seconds=2))
    db.session.add_all([p1, p2, p3, p4])
    db.session.commit()

    u1.follow(u2)  # john follows susan
    u1.follow(u4)  # john follows david
    u2.follow(u3)  # susan follows mary
    u3.follow(u4)  # mary follows david
    db.session.commit()

    assert db.session.scalars(u1.following_posts()).all() == [p2, p4, p1]
    assert db.session.scalars(u2.following_posts()).all() == [p2, p3]
    assert db.session.scalars(u3.following_posts()).all() == [p3, p4]
    assert db.session.scalars(u4.following_posts()).all() == [p4]


def test_timestamps_come_back_in_utc(app):
    user = User(username='susan', email='susan@example.com')
    db.session.add(user)
    db.session.commit()
    db.session.expire_all()
    user = db.session.scalar(sa.select(User))
    assert user.last_seen.utcoffset() == timedelta(0)


def test_reset_token_round_trip(app):
    user = User(username='susan', email='susan@example.com')
    user.set_password('cat')
    db.session.add(user)
    db.session.commit()
    token = user.get_reset_password_token()
    assert isinstance(token, str)
    assert User.verify_reset_password_token(token) == user


def test_a_confirmation_state_changes_with_each_thing_it_binds(app):
    user = User(id=7, username='zoe', email='zoe@example.com')
    state = user.confirm_state()
    assert re.fullmatch(r'[0-9a-f]{32}', state) and user.confirm_state() == state
    # Another account with the same address (one being registered twice at once).
    assert User(id=8, username='zed', email='zoe@example.com').confirm_state() != state
    assert user.confirm_state('another-key-that-is-at-least-32-bytes-long') != state
    user.email = 'zoe.new@example.com'
    moved = user.confirm_state()
    assert moved != state
    user.email_confirmed_at = utcnow()
    confirmed = user.confirm_state()
    assert confirmed != moved
    user.email_confirmed_at += timedelta(seconds=1)
    assert user.confirm_state() != confirmed
    assert user.has_confirm_state(user.confirm_state()) and not user.has_confirm_state(confirmed)


# The states that reset and confirmation links carry, as every release so far has
# computed them. A link outlives the process that sent it (a confirmation link is valid
# for days): computed another way, every link already sent would stop working at the
# upgrade. Change these only on purpose, knowing that.
EARLIER_KEY = 'the-secret-key-of-an-earlier-release-32-bytes'
EARLIER_HASH = 'scrypt:32768:8:1$salt$' + '0' * 128


def test_the_links_already_sent_keep_working_across_an_upgrade(app):
    user = User(id=7, username='zoe', email='Zoe@example.com')
    # An account made by an admin: no password, never logged in, not confirmed.
    assert user.reset_state(EARLIER_KEY) == 'a374fb30694a3345b19cea2e06a4bfeb'
    assert user.confirm_state(EARLIER_KEY) == '9f0ccbd5fcb9953ce472a8033db4c2f8'
    user.password_hash = EARLIER_HASH
    assert user.reset_state(EARLIER_KEY) == '090a51e92e52c3a5695b35affaf3b548'
    user.last_login_at = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    assert user.reset_state(EARLIER_KEY) == 'd0d8b32a74b46ffb2afd880c887eebbc'
    user.email_confirmed_at = datetime(2026, 12, 2, 10, 0, 5, 123456, tzinfo=UTC)
    assert user.confirm_state(EARLIER_KEY) == '860cfb9ecc3c6d7f109e3b1bd5441dbb'


def signed_token_of_length(length, key):
    """A valid HS256 token exactly ``length`` characters long."""
    for pad in range(length):
        claims = {'exp': utcnow() + timedelta(hours=1), 'pad': 'x' * pad}
        token = jwt.encode(claims, key, algorithm='HS256')
        if len(token) == length:
            return token
    raise AssertionError(f'no token of {length} characters')


def test_a_signed_token_is_read_up_to_4096_characters_and_no_further(app):
    key = app.config['SECRET_KEY']
    assert decode_signed(signed_token_of_length(4096, key), require=['exp'])['pad']
    assert decode_signed(signed_token_of_length(4097, key), require=['exp']) is None
    assert decode_signed(None, require=['exp']) is None
