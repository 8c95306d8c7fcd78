"""Links built many times a page come out exactly as url_for makes them."""

import pytest
from flask import url_for

from app.avatars import avatar_digest, avatar_url
from app.links import url_for_value, user_url

NAMES = ['susan', 'john.smith-2', 'a_b', 'ünïcode', 'with space', 'q?x#y', '%41', 'semi;colon']


@pytest.mark.parametrize('name', NAMES)
def test_user_links_are_url_for(app, name):
    with app.test_request_context('/'):
        assert user_url(name) == url_for('main.user', username=name)


def test_links_follow_the_script_root_of_each_request(app):
    with app.test_request_context('/', base_url='http://localhost/blog/'):
        assert user_url('susan') == '/blog/user/susan'
    with app.test_request_context('/'):
        assert user_url('susan') == '/user/susan'


def test_links_outside_a_request_are_external(app):
    with app.app_context():
        assert user_url('susan') == url_for('main.user', username='susan')
        assert user_url('susan').startswith('https://')


def test_avatar_links_are_url_for(app):
    class Account:
        id = 42
        email = 'someone@example.com'

    with app.test_request_context('/'):
        expected = url_for('main.avatar', digest=avatar_digest(42))
        assert avatar_url(Account(), 48) == expected


def test_a_rule_without_the_value_is_refused(app):
    with app.test_request_context('/'), pytest.raises(ValueError):
        url_for_value('main.explore', 'username', 'susan')
