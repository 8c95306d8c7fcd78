"""Pages at real size: requests/s and latency of /explore, /index and /user/<name> under
gunicorn with 2 workers, at 200,000 posts and at 1,000 posts, with 10,000 users.

    .venv/bin/python bench/bench_pages.py [--posts 200000] [--seconds 10]
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.serve import NO_REDIRECT, Server, app_env, flask, free_port  # noqa: E402

USERS = 10_000
FOLLOWS = 100


def build(database_url, posts, port):
    """A database with USERS users, ``posts`` posts, and a user 'bench' following 100 others."""
    env = app_env(port, database_url, MAIL_QUEUE='none')
    flask(env, 'db', 'upgrade')
    start = time.perf_counter()
    flask(env, 'seed', '--users', str(USERS), '--posts', str(posts), '--follows', '10')
    seeded = time.perf_counter() - start
    script = (
        'import sqlalchemy as sa\n'
        'from app import db\n'
        'from app.models import User\n'
        'from app.seed import SEED_PASSWORD\n'
        "bench = User(username='bench', email='bench@example.com')\n"
        'bench.set_password(SEED_PASSWORD)\n'
        'db.session.add(bench)\n'
        # The most prolific authors, so that the home page is full at both sizes.
        'from app.models import Post\n'
        'top = sa.select(Post.user_id).group_by(Post.user_id)'
        f'.order_by(sa.func.count().desc(), Post.user_id).limit({FOLLOWS})\n'
        'for user in db.session.scalars(sa.select(User).where(User.id.in_(top))):\n'
        '    bench.follow(user)\n'
        'db.session.commit()\n'
    )
    subprocess.run(
        [
            sys.executable,
            '-c',
            'from microblog import app\nwith app.app_context():\n'
            + '\n'.join('    ' + line for line in script.splitlines()),
        ],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return seeded


def session_cookie(base):
    """Log in as 'bench' and return the Cookie header value."""
    body = urllib.parse.urlencode(
        {'username': 'bench', 'password': 'microblog-seed-password'}
    ).encode()
    request = urllib.request.Request(base + '/login', data=body, method='POST')
    try:
        NO_REDIRECT.open(request)
    except urllib.error.HTTPError as error:
        cookie = error.headers['Set-Cookie'].split(';', 1)[0]
    check = urllib.request.Request(base + '/index', headers={'Cookie': cookie})
    with NO_REDIRECT.open(check) as response:
        assert response.status == 200, 'the benchmark user is not logged in'
    return cookie


def wrk(url, cookie, seconds):
    output = subprocess.run(
        ['wrk', '-t2', '-c8', f'-d{seconds}s', '--latency', '-H', f'Cookie: {cookie}', url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r'Requests/sec:\s+([\d.]+)', output)[1])
    non2xx = re.search(r'Non-2xx or 3xx responses: (\d+)', output)
    return rps, _ms(output, '50%'), _ms(output, '99%'), int(non2xx[1]) if non2xx else 0


def _ms(output, label):
    value, unit = re.search(rf'{label}\s+([\d.]+)(\w+)', output).groups()
    return float(value) * {'us': 0.001, 'ms': 1, 's': 1000}[unit]


def queries_per_page(database_url, paths):
    """SQL statements each page runs, counted in-process with the test client."""
    import sqlalchemy as sa

    from app import create_app, db
    from bench.config import CountingConfig

    settings = type('Count', (CountingConfig,), {'SQLALCHEMY_DATABASE_URI': database_url})
    app = create_app(settings)
    client = app.test_client()
    client.post('/login', data={'username': 'bench', 'password': 'microblog-seed-password'})
    counts = {}
    with app.app_context():
        engine = db.engine
    for path in paths:
        statements = []
        listener = lambda *args, found=statements: found.append(args[2])  # noqa: E731
        sa.event.listen(engine, 'before_cursor_execute', listener)
        client.get(path)
        sa.event.remove(engine, 'before_cursor_execute', listener)
        counts[path] = len(statements)
    return counts


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--posts', type=int, default=200_000)
    parser.add_argument('--small', type=int, default=1_000)
    parser.add_argument('--seconds', type=int, default=10)
    args = parser.parse_args()
    if not shutil.which('wrk'):
        sys.exit('wrk is not installed: apt-get install -y wrk')
    results = {}
    workdir = Path(tempfile.mkdtemp())
    profile = None
    try:
        for posts in (args.small, args.posts):
            port = free_port()
            url = f'sqlite:///{workdir}/pages-{posts}.db'
            seeded = build(url, posts, port)
            print(f'seeded {USERS} users and {posts} posts in {seeded:.1f} s', flush=True)
            env = app_env(port, url, MAIL_QUEUE='none')
            server = Server(env, port, workers=2, threads=1)
            try:
                cookie = session_cookie(server.base)
                if profile is None:
                    profile = '/user/' + _first_author(url)
                paths = ['/explore', '/index', profile]
                for path in paths:
                    results[(posts, path)] = wrk(server.base + path, cookie, args.seconds)
            finally:
                server.stop()
            counts = queries_per_page(url, paths)
            for path in paths:
                results[(posts, path)] += (counts[path],)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(
        f'\ngunicorn -w 2 (sync), SQLite, {USERS} users; wrk -t2 -c8 -d{args.seconds}s; '
        "logged in as 'bench', who follows the 100 most prolific authors; "
        'the profile is the most prolific author'
    )
    print(
        f'{"page":<22}{"posts":>8}{"req/s":>9}{"p50 ms":>9}{"p99 ms":>9}{"non-2xx":>9}'
        f'{"queries":>9}'
    )
    for (posts, path), (rps, p50, p99, bad, queries) in sorted(results.items()):
        print(f'{path:<22}{posts:>8}{rps:>9.1f}{p50:>9.2f}{p99:>9.2f}{bad:>9}{queries:>9}')
    print(f'\nratio req/s at {args.posts:,} posts / at {args.small:,} posts:')
    for path in ['/explore', '/index', profile]:
        ratio = results[(args.posts, path)][0] / results[(args.small, path)][0]
        print(f'  {path:<22}{ratio:.2f}')
    print(
        f'command: .venv/bin/python bench/bench_pages.py --posts {args.posts} '
        f'--seconds {args.seconds}'
    )


def _first_author(database_url):
    import sqlite3

    path = database_url.removeprefix('sqlite:///')
    with sqlite3.connect(path) as connection:
        return connection.execute(
            'SELECT username FROM user WHERE id = (SELECT user_id FROM post'
            ' GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1)'
        ).fetchone()[0]


import urllib.error  # noqa: E402
import urllib.parse  # noqa: E402

if __name__ == '__main__':
    main()
