"""Pages run a small, constant number of SQL queries, using indexes, whatever the data size."""

import re
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app import db
from app.main.routes import Listing
from app.models import Post, User, utcnow


class QueryCounter:
    """Records every SQL statement the engine runs for this thread while it is active.

    The test client serves the page in the test's thread; the mail delivery thread
    polls the outbox on its own cadence, and its queries are not the page's.
    """

    def __init__(self, engine):
        self.engine = engine
        self.statements = []
        self.thread = threading.get_ident()

    def _record(self, conn, cursor, statement, parameters, context, executemany):
        if threading.get_ident() == self.thread:
            self.statements.append((statement, parameters))

    def __enter__(self):
        sa.event.listen(self.engine, 'before_cursor_execute', self._record)
        return self

    def __exit__(self, *exc):
        sa.event.remove(self.engine, 'before_cursor_execute', self._record)


def fill(authors, posts_each, start=0):
    """``authors`` more users with ``posts_each`` posts each; susan follows all of them."""
    susan = db.session.scalar(sa.select(User).where(User.username == 'susan'))
    now = utcnow()
    for number in range(start, start + authors):
        author = User(username=f'author{number}', email=f'author{number}@example.com')
        db.session.add(author)
        db.session.flush()
        susan.follow(author)
        db.session.add_all(
            Post(body=f'post {number}.{n}', author=author, timestamp=now - timedelta(minutes=n))
            for n in range(posts_each)
        )
    db.session.commit()


def page_queries(client, path):
    engine = db.engine
    with QueryCounter(engine) as counter:
        response = client.get(path)
    assert response.status_code == 200
    return counter.statements


PAGES = ['/index', '/explore', '/user/author0', '/explore?before={post}', '/user/susan']


@pytest.mark.parametrize('path', PAGES)
def test_query_count_does_not_grow_with_the_data(app, make_user, auth, client, path):
    make_user('susan')
    counts = []
    for start, authors, posts_each in ((0, 1, 3), (1, 10, 6)):
        fill(authors, posts_each, start)
        auth.login()
        post = db.session.scalar(sa.select(sa.func.max(Post.id)))
        counts.append(len(page_queries(client, path.format(post=post))))
        auth.logout()
    assert counts[0] == counts[1]
    assert counts[0] <= 10


# The session row with its user, then the page's own: the posts with their authors;
# an anchor post; a profile's user with its counts and follow state, in one statement.
QUERIES_PER_PAGE = {
    '/index': 2,
    '/explore': 2,
    '/explore?before={post}': 3,
    '/user/author0': 3,
    '/user/susan': 3,
}


@pytest.mark.parametrize('path', QUERIES_PER_PAGE)
def test_queries_per_page(app, make_user, auth, client, path):
    make_user('susan')
    fill(3, 4)
    auth.login()
    post = db.session.scalar(sa.select(sa.func.max(Post.id)))
    assert len(page_queries(client, path.format(post=post))) == QUERIES_PER_PAGE[path]


def test_posts_load_with_their_authors(app, make_user, auth, client):
    make_user('susan')
    fill(10, 6)
    auth.login()
    statements = page_queries(client, '/explore')
    post_queries = [s for s, _ in statements if re.search(r'FROM post\b', s)]
    assert len(post_queries) == 1
    assert 'JOIN user' in post_queries[0].replace('"', '')


def test_counts_do_not_load_rows(app, make_user, auth, client):
    make_user('susan')
    fill(5, 2)
    auth.login()
    statements = [s for s, _ in page_queries(client, '/user/susan')]
    follower_queries = [s for s in statements if 'followers' in s]
    assert follower_queries
    for statement in follower_queries:
        assert 'count(' in statement.lower() or 'followers.followed_id = ' in statement


def explain(statement, parameters):
    """The query plan of a captured statement, as text."""
    connection = db.session.connection()
    if db.engine.dialect.name == 'sqlite':
        rows = connection.exec_driver_sql('EXPLAIN QUERY PLAN ' + statement, parameters)
        return ' | '.join(str(row[-1]) for row in rows)
    # A table of a few thousand rows is small enough for PostgreSQL to prefer a
    # sequential scan; with that option off, the plan shows which indexes serve.
    connection.exec_driver_sql('SET LOCAL enable_seqscan = off')
    rows = connection.exec_driver_sql('EXPLAIN ' + statement, parameters)
    return ' | '.join(str(row[0]) for row in rows)


@pytest.mark.fresh_database
@pytest.mark.parametrize('path', ['/index', '/explore', '/user/author0'])
def test_post_listings_use_indexes(app, make_user, auth, client, path):
    make_user('susan')
    fill(30, 40)
    others = [User(username=f'other{n}', email=f'other{n}@example.com') for n in range(30)]
    db.session.add_all(others)
    db.session.flush()
    db.session.add_all(Post(body='x', author=user) for user in others for _ in range(40))
    db.session.commit()
    if db.engine.dialect.name == 'postgresql':
        db.session.execute(sa.text('ANALYZE'))
        db.session.commit()
    auth.login()
    statements = page_queries(client, path)
    listing = next((s, p) for s, p in statements if re.search(r'FROM post\b', s))
    plan = explain(*listing)
    if db.engine.dialect.name == 'sqlite':
        assert 'USING INDEX' in plan or 'USING COVERING INDEX' in plan, plan
        assert not re.search(r'SCAN post(?! USING)', plan), plan
    else:
        assert 'ix_post_' in plan, plan
        assert 'Seq Scan on post' not in plan, plan


def test_followers_table_is_indexed_both_ways(app):
    indexes = sa.inspect(db.engine).get_indexes('followers')
    columns = [tuple(index['column_names']) for index in indexes]
    primary = tuple(sa.inspect(db.engine).get_pk_constraint('followers')['constrained_columns'])
    assert primary == ('follower_id', 'followed_id')
    assert ('followed_id', 'follower_id') in columns


@pytest.mark.sqlite_only
def test_a_listing_builds_each_kind_of_page_once_and_keeps_it(app):
    listing = Listing(Post.user_id == sa.bindparam('author_id'))
    newest = listing.statement(None, 26, 'sqlite')
    assert isinstance(newest, sa.Select)
    assert listing.statement(None, 26, 'sqlite') is newest
    others = [
        listing.statement('older', 26, 'sqlite'),
        listing.statement('newer', 26, 'sqlite'),
        listing.statement(None, 11, 'sqlite'),
        listing.statement(None, 26, 'postgresql'),
    ]
    assert len({id(statement) for statement in [newest, *others]}) == 5
