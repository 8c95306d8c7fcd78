"""`flask seed` fills the database in bulk with data a person could log in to."""

import sqlalchemy as sa

from app import db
from app.models import Post, User, followers
from app.seed import SEED_PASSWORD


def test_seed_creates_users_posts_and_follows(app, runner, client):
    result = runner.invoke(args=['seed', '--users', '50', '--posts', '500', '--follows', '5'])
    assert result.exit_code == 0, result.output
    assert 'Added 50 users, 500 posts, 250 follows.' in result.output
    count = lambda table: db.session.scalar(sa.select(sa.func.count()).select_from(table))  # noqa: E731
    assert (count(User), count(Post), count(followers)) == (50, 500, 250)
    assert db.session.scalar(sa.select(sa.func.count(sa.distinct(User.email)))) == 50
    assert db.session.scalar(sa.select(sa.func.count(sa.distinct(User.password_hash)))) == 1
    self_follows = (
        sa.select(sa.func.count())
        .select_from(followers)
        .where(followers.c.follower_id == followers.c.followed_id)
    )
    assert db.session.scalar(self_follows) == 0
    username = db.session.scalar(sa.select(User.username).limit(1))
    response = client.post('/login', data={'username': username, 'password': SEED_PASSWORD})
    assert response.headers['Location'] == '/index'
