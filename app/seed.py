"""`flask seed`: realistic fake data in bulk, for trying and measuring Microblog at size."""

import random
from datetime import timedelta

import click
import sqlalchemy as sa
from faker import Faker
from flask.cli import with_appcontext

from app import db
from app.addresses import lookup_key
from app.models import Post, User, followers, hash_password, utcnow

SEED_PASSWORD = 'microblog-seed-password'
CHUNK = 5000


def _chunks(rows, size=CHUNK):
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _insert(label, table, rows):
    with click.progressbar(length=len(rows), label=label) as bar:
        for chunk in _chunks(rows):
            db.session.execute(sa.insert(table), chunk)
            bar.update(len(chunk))
    db.session.commit()


@click.command('seed')
@click.option('--users', default=100, show_default=True, help='Users to add.')
@click.option(
    '--posts', default=1000, show_default=True, help='Posts to add, spread over all users.'
)
@click.option('--follows', default=10, show_default=True, help='Users each new user follows.')
@click.option('--seed', 'random_seed', default=1, show_default=True, help='Random seed.')
@with_appcontext
def seed_command(users, posts, follows, random_seed):
    """Fill the database with fake users, posts and follows."""
    fake = Faker()
    Faker.seed(random_seed)
    rng = random.Random(random_seed)
    # Hashing is slow on purpose; every seeded user shares one hash.
    password_hash = hash_password(SEED_PASSWORD)
    first_id = (db.session.scalar(sa.select(sa.func.max(User.id))) or 0) + 1
    now = utcnow()

    user_rows = []
    for number in range(first_id, first_id + users):
        username = f'{fake.user_name()}{number}'[:64]
        user_rows.append(
            {
                'username': username,
                'email': f'{username}@example.com',
                'email_key': lookup_key(f'{username}@example.com'),
                'password_hash': password_hash,
                'about_me': fake.sentence(nb_words=12)[:140],
                'last_seen': now - timedelta(minutes=rng.randint(0, 60 * 24 * 30)),
            }
        )
    _insert('users  ', User.__table__, user_rows)
    new_ids = list(
        db.session.scalars(sa.select(User.id).where(User.id >= first_id).order_by(User.id))
    )
    all_ids = list(db.session.scalars(sa.select(User.id)))

    # Timestamps are drawn over the past year and sorted, so that ids follow time.
    offsets = sorted((rng.randint(0, 365 * 24 * 3600) for _ in range(posts)), reverse=True)
    post_rows = (
        [
            {
                'body': fake.sentence(nb_words=rng.randint(4, 18))[:140],
                'timestamp': now - timedelta(seconds=offset),
                'user_id': rng.choice(new_ids),
            }
            for offset in offsets
        ]
        if new_ids
        else []
    )
    _insert('posts  ', Post.__table__, post_rows)

    follow_rows = []
    for follower in new_ids:
        candidates = rng.sample(all_ids, min(follows + 1, len(all_ids)))
        chosen = [user_id for user_id in candidates if user_id != follower][:follows]
        follow_rows.extend(
            {'follower_id': follower, 'followed_id': followed} for followed in chosen
        )
    _insert('follows', followers, follow_rows)

    click.echo(
        f'Added {len(user_rows)} users, {len(post_rows)} posts, {len(follow_rows)} follows. '
        f'Every seeded user has the password {SEED_PASSWORD!r}.'
    )
