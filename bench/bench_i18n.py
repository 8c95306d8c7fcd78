"""What speaking two languages costs a page: the locale choice, and a page in each language.

In one process with Flask's test client (no server, no network), on a temporary SQLite
database with one user and 25 posts on /explore:

- the locale selector alone, for a signed-in user (the account's column, already loaded:
  no query), a visitor who chose in the footer (the session cookie) and a browser's
  Accept-Language;
- the queries a signed-in page makes in English and in Chinese (must be the same);
- the mean time of /explore and /login in English and in Chinese.

    .venv/bin/python bench/bench_i18n.py [--requests 300]
"""

import argparse
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402
from flask_login import login_user  # noqa: E402

from app import create_app, db  # noqa: E402
from app.i18n import SESSION_KEY, select_locale  # noqa: E402
from app.models import Post, User  # noqa: E402
from bench.config import CountingConfig  # noqa: E402

ENGLISH = {'Accept-Language': 'en-US,en;q=0.9'}
CHINESE = {'Accept-Language': 'zh-CN,zh;q=0.9,en;q=0.8'}


def per_call_us(function, number=20_000):
    return min(timeit.repeat(function, number=number, repeat=5)) / number * 1e6


def page_ms(client, path, headers, requests):
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        response = client.get(path, headers=headers)
        times.append(time.perf_counter() - start)
        assert response.status_code == 200, response.status_code
    return statistics.mean(times) * 1000, statistics.median(times) * 1000


def count_queries(app, client, path, headers):
    statements = []

    def count(*_args):
        statements.append(1)

    with app.app_context():
        sa.event.listen(db.engine, 'before_cursor_execute', count)
        try:
            client.get(path, headers=headers)
        finally:
            sa.event.remove(db.engine, 'before_cursor_execute', count)
    return len(statements)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--requests', type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        config = type(
            'BenchConfig',
            (CountingConfig,),
            {
                'SQLALCHEMY_DATABASE_URI': f'sqlite:///{folder}/bench.db',
                'PASSWORD_HASH_METHOD': 'pbkdf2:sha256:1',
            },
        )
        app = create_app(config)
        with app.app_context():
            db.create_all()
            user = User(username='bench', email='bench@example.com')
            user.set_password('bench-password-123')
            db.session.add(user)
            db.session.add_all(Post(body=f'post {n}', author=user) for n in range(25))
            db.session.commit()
            user_id = user.id

        print('Locale selector, per call:')
        with app.test_request_context('/', headers=CHINESE):
            login_user(db.session.get(User, user_id))
            print(f'  signed-in account ({select_locale()}): {per_call_us(select_locale):.2f} µs')
        with app.test_request_context('/', headers=ENGLISH):
            from flask import session

            session[SESSION_KEY] = 'zh_CN'
            print(
                f'  visitor, footer choice ({select_locale()}): {per_call_us(select_locale):.2f} µs'
            )
        with app.test_request_context('/', headers=CHINESE):
            print(
                f'  visitor, Accept-Language ({select_locale()}): '
                f'{per_call_us(select_locale):.2f} µs'
            )

        print(f'Pages, {args.requests} requests each (mean / median ms):')
        for name, headers in (('English', ENGLISH), ('Chinese', CHINESE)):
            visitor = app.test_client()
            mean, median = page_ms(visitor, '/login', headers, args.requests)
            print(f'  /login   {name}: {mean:.2f} / {median:.2f}')
        for locale in ('en', 'zh_CN'):
            client = app.test_client()
            client.post('/login', data={'username': 'bench', 'password': 'bench-password-123'})
            client.post('/language', data={'locale': locale, 'next': '/explore'})
            queries = count_queries(app, client, '/explore', {})
            mean, median = page_ms(client, '/explore', {}, args.requests)
            print(f'  /explore {locale}: {mean:.2f} / {median:.2f}  ({queries} queries)')


if __name__ == '__main__':
    main()
