"""Pages at real size: each logged-in page's requests/s as a ratio to `GET /login`, measured
in the same run, under gunicorn with 2 workers (sync, then threaded), on SQLite and on
PostgreSQL, at 1,000 posts and at 200,000 posts, with 10,000 users.

    .venv/bin/python bench/bench_pages.py [--posts 200000] [--seconds 5] [--rounds 3]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/bench_pages]

`GET /login` (anonymous) touches no table: it is the framework's floor on this machine at
this moment, so the ratio says what a page costs beyond it, whatever else the machine does.
The PostgreSQL database named by --postgres is emptied (its public schema dropped) first.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402

from bench.serve import NO_REDIRECT, Server, app_env, command_line, flask, free_port  # noqa: E402

USERS = 10_000
FOLLOWS = 100
# The README's recommended serving (bench/README.md, "Serving"), and plain sync workers.
MODES = {'sync': 1, 'threads': 4}
# Production settings but rate limits; CSRF protection stays on, as in production.
SETTINGS = {'MAIL_QUEUE': 'none', 'WTF_CSRF_ENABLED': 'true'}
_CSRF_TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def reset_postgres(url):
    """Empty the benchmark's PostgreSQL database."""
    engine = sa.create_engine(url, isolation_level='AUTOCOMMIT')
    with engine.connect() as connection:
        connection.exec_driver_sql('DROP SCHEMA public CASCADE')
        connection.exec_driver_sql('CREATE SCHEMA public')
    engine.dispose()


def build(database_url, posts, port):
    """A database with USERS users, ``posts`` posts, and a user 'bench' following 100 others."""
    env = app_env(port, database_url, **SETTINGS)
    if database_url.startswith('postgresql'):
        reset_postgres(database_url)
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
    if database_url.startswith('postgresql'):
        # What autovacuum would have done by the time a real site had this much data.
        engine = sa.create_engine(database_url, isolation_level='AUTOCOMMIT')
        with engine.connect() as connection:
            connection.exec_driver_sql('VACUUM ANALYZE')
        engine.dispose()
    return seeded


def session_cookie(base):
    """Log in as 'bench' (the form's CSRF token included) and return the Cookie header value."""
    with urllib.request.urlopen(base + '/login') as response:
        token = _CSRF_TOKEN.search(response.read().decode())
        cookie = _session_cookie(response.headers)
    fields = {'username': 'bench', 'password': 'microblog-seed-password'}
    if token:
        fields['csrf_token'] = token[1]
    request = urllib.request.Request(
        base + '/login',
        data=urllib.parse.urlencode(fields).encode(),
        method='POST',
        headers={'Cookie': cookie},
    )
    try:
        NO_REDIRECT.open(request)
    except urllib.error.HTTPError as error:
        assert error.code == 302, f'the login failed with {error.code}'
        cookie = _session_cookie(error.headers)
    check = urllib.request.Request(base + '/index', headers={'Cookie': cookie})
    with NO_REDIRECT.open(check) as response:
        assert response.status == 200, 'the benchmark user is not logged in'
    return cookie


def _session_cookie(headers):
    for value in headers.get_all('Set-Cookie'):
        if value.startswith('session='):
            return value.split(';', 1)[0]
    raise AssertionError('no session cookie')


def wrk(url, cookie, seconds, workers=(), database=None):
    """(requests/s, p50 ms, p99 ms, non-2xx responses, CPU ms per request of ``workers``,
    CPU ms per request of the ``database``'s server, the busiest worker's share of the
    workers' CPU time) of ``url`` under wrk -t2 -c8."""
    headers = ['-H', f'Cookie: {cookie}'] if cookie else []
    database_before = database.cpu_seconds() if database else {}
    each_before = [_process_cpu_seconds(pid) for pid in workers]
    output = subprocess.run(
        ['wrk', '-t2', '-c8', f'-d{seconds}s', '--latency', *headers, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pairs = zip(workers, each_before, strict=True)
    each = [_process_cpu_seconds(pid) - before for pid, before in pairs]
    cpu = sum(each)
    database_cpu = 0
    if database:
        after = database.cpu_seconds()
        database_cpu = sum(after[pid] - database_before.get(pid, 0) for pid in after)
    rps = float(re.search(r'Requests/sec:\s+([\d.]+)', output)[1])
    requests = int(re.search(r'(\d+) requests in', output)[1])
    non2xx = re.search(r'Non-2xx or 3xx responses: (\d+)', output)
    return (
        rps,
        _ms(output, '50%'),
        _ms(output, '99%'),
        int(non2xx[1]) if non2xx else 0,
        cpu * 1000 / max(requests, 1),
        database_cpu * 1000 / max(requests, 1),
        max(each) / cpu if each and cpu else 1.0,
    )


# A threaded worker keeps the connections it accepts, and wrk opens its 8 at once: now
# and then one worker accepts all 8 and the other idles, and the run measures one core
# (/login at 262 req/s and 537 in runs a minute apart, the idle worker with 0.01 s of
# CPU). A run in which one worker did more than this share of the work is drawn again.
LOPSIDED = 0.75
DRAWS = 5


def balanced_wrk(url, cookie, seconds, workers, database, redrawn):
    """``wrk``, drawn again (up to DRAWS times) while one worker does nearly all the work."""
    for _ in range(DRAWS):
        result = wrk(url, cookie, seconds, workers, database)
        if len(workers) < 2 or result[6] <= LOPSIDED:
            break
        redrawn.append(url)
    return result


def _cpu_seconds(pids):
    """User and system CPU time the processes have used: a cost that other load barely moves."""
    return sum(_process_cpu_seconds(pid) for pid in pids)


def _process_cpu_seconds(pid):
    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


class DatabaseServer:
    """The PostgreSQL backends serving the app's connections, on this machine: their CPU
    time is what a page costs the database, which the workers' CPU time leaves out."""

    def __init__(self, url):
        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        self.connection = self.engine.connect()

    def cpu_seconds(self):
        """Each of the database's client backends (but this one) and the CPU time it used."""
        pids = self.connection.exec_driver_sql(
            'SELECT pid FROM pg_stat_activity WHERE datname = current_database()'
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ).scalars()
        self.connection.rollback()
        seconds = {}
        for pid in pids:
            try:
                seconds[pid] = _process_cpu_seconds(pid)
            except OSError:  # ended since
                pass
        return seconds

    def close(self):
        self.connection.close()
        self.engine.dispose()


def _ms(output, label):
    value, unit = re.search(rf'{label}\s+([\d.]+)(\w+)', output).groups()
    return float(value) * {'us': 0.001, 'ms': 1, 's': 1000}[unit]


def queries_per_page(database_url, paths):
    """SQL statements each page runs, counted in-process with the test client."""
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
    with app.app_context():
        db.engine.dispose()
    return counts


def most_prolific_author(database_url):
    engine = sa.create_engine(database_url)
    with engine.connect() as connection:
        name = connection.exec_driver_sql(
            'SELECT username FROM "user" WHERE id = (SELECT user_id FROM post'
            ' GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1)'
        ).scalar_one()
    engine.dispose()
    return name


def measure(base, cookie, paths, seconds, rounds, workers, database=None, redrawn=None):
    """Rounds of /login then each page: rates, and each page's ratio to /login that round."""
    redrawn = [] if redrawn is None else redrawn
    for path in ['/login', *paths]:  # warm up: caches, the database's buffers
        wrk(base + path, None if path == '/login' else cookie, 2)
    runs = {path: [] for path in ['/login', *paths]}
    for _ in range(rounds):
        login = balanced_wrk(base + '/login', None, seconds, workers, database, redrawn)
        runs['/login'].append((*login, login[0] / login[0]))
        for path in paths:
            result = balanced_wrk(base + path, cookie, seconds, workers, database, redrawn)
            runs[path].append((*result, result[0] / login[0]))
    return runs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--posts', type=int, default=200_000)
    parser.add_argument('--small', type=int, default=1_000)
    parser.add_argument('--seconds', type=int, default=5)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument(
        '--postgres',
        default=os.environ.get('BENCH_DATABASE_URL'),
        help='a PostgreSQL database to empty and fill (default: $BENCH_DATABASE_URL; '
        'none: SQLite only)',
    )
    parser.add_argument('--databases', default='sqlite,postgresql')
    parser.add_argument('--modes', default=','.join(MODES))
    args = parser.parse_args()
    if not shutil.which('wrk'):
        sys.exit('wrk is not installed: apt-get install -y wrk')
    databases = args.databases.split(',')
    if 'postgresql' in databases and not args.postgres:
        print('no --postgres URL: SQLite only', flush=True)
        databases.remove('postgresql')
    modes = args.modes.split(',')
    print(f'load average before: {_load()}', flush=True)
    results = {}
    queries = {}
    redraws = {}
    workdir = Path(tempfile.mkdtemp())
    try:
        for database in databases:
            for posts in (args.small, args.posts):
                if database == 'sqlite':
                    url = f'sqlite:///{workdir}/pages-{posts}.db'
                else:
                    url = args.postgres
                port = free_port()
                seeded = build(url, posts, port)
                print(f'{database}: {USERS} users and {posts} posts in {seeded:.1f} s', flush=True)
                paths = ['/explore', '/index', '/user/' + most_prolific_author(url)]
                env = app_env(port, url, **SETTINGS)
                for mode in modes:
                    server = Server(env, port, workers=2, threads=MODES[mode])
                    database_server = DatabaseServer(url) if database == 'postgresql' else None
                    try:
                        cookie = session_cookie(server.base)
                        workers = server.worker_pids()
                        redrawn = []
                        runs = measure(
                            server.base,
                            cookie,
                            paths,
                            args.seconds,
                            args.rounds,
                            workers,
                            database_server,
                            redrawn,
                        )
                        redraws[(database, posts, mode)] = len(redrawn)
                    finally:
                        server.stop()
                        if database_server:
                            database_server.close()
                    for path, values in runs.items():
                        results[(database, posts, mode, _name(path))] = values
                    print(f'  {mode}: done, load average {_load()}', flush=True)
                for path, count in queries_per_page(url, paths).items():
                    queries[(database, posts, _name(path))] = count
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(
        f'\ngunicorn -w 2, sync (--threads 1) and threaded (--threads 4); {USERS:,} users; '
        f'wrk -t2 -c8 -d{args.seconds}s, {args.rounds} rounds of /login then each page; '
        "logged in as 'bench', who follows the 100 most prolific authors; the profile is "
        "the most prolific author. Medians over the rounds; ratio: the page's req/s over "
        "/login's in the same round (min: its lowest round); CPU ms: the workers' CPU time "
        "per request; CPU ratio: /login's CPU ms over the page's; DB ms: the PostgreSQL "
        "backends' CPU time per request; all: /login's CPU ms and DB ms over the page's."
    )
    print(
        f'{"database":<11}{"posts":>8} {"mode":<8}{"page":<14}{"req/s":>8}{"ratio":>7}'
        f'{"min":>6}{"p50 ms":>8}{"p99 ms":>8}{"non-2xx":>8}{"queries":>8}{"CPU ms":>8}'
        f'{"CPU ratio":>10}{"DB ms":>7}{"all":>6}'
    )
    for (database, posts, mode, page), values in results.items():
        rps, p50, p99 = (statistics.median(v[i] for v in values) for i in range(3))
        bad = sum(v[3] for v in values)
        cpu, database_cpu = (statistics.median(v[i] for v in values) for i in (4, 5))
        login = results[(database, posts, mode, '/login')]
        login_cpu, login_database = (statistics.median(v[i] for v in login) for i in (4, 5))
        everything = (login_cpu + login_database) / (cpu + database_cpu)
        ratios = [v[7] for v in values]
        count = queries.get((database, posts, page), 0)
        print(
            f'{database:<11}{posts:>8} {mode:<8}{page:<14}{rps:>8.1f}'
            f'{statistics.median(ratios):>7.2f}{min(ratios):>6.2f}{p50:>8.2f}{p99:>8.2f}'
            f'{bad:>8}{count:>8}{cpu:>8.2f}{login_cpu / cpu:>10.2f}'
            f'{database_cpu:>7.2f}{everything:>6.2f}'
        )
    print(f'\nreq/s at {args.posts:,} posts / at {args.small:,} posts (medians):')
    for database in databases:
        for mode in modes:
            line = []
            for page in ('/explore', '/index', '/user/<name>'):
                big = statistics.median(v[0] for v in results[(database, args.posts, mode, page)])
                small = statistics.median(v[0] for v in results[(database, args.small, mode, page)])
                line.append(f'{page} {big / small:.2f}')
            print(f'  {database:<11}{mode:<8}' + ', '.join(line))
    print(
        f'runs drawn again because one worker did over {LOPSIDED:.0%} of the work: '
        + ', '.join(f'{d} {p} {m} {n}' for (d, p, m), n in redraws.items())
    )
    print(f'load average after: {_load()}')
    print(f'command: {command_line()}')


def _name(path):
    return '/user/<name>' if path.startswith('/user/') else path


def _load():
    return ' '.join(f'{value:.2f}' for value in os.getloadavg())


if __name__ == '__main__':
    main()
