"""Where one page's time goes: pyinstrument on a gunicorn worker (-w 1, sync) under wrk,
summarised as milliseconds per request by phase (request hooks, session and user loading,
the view's queries, ORM, forms, template rendering, the response, gunicorn itself).

    .venv/bin/python bench/profile_pages.py [--page /explore] [--posts 200000]
        [--seconds 15] [--postgres URL] [--tree profile.txt]

A sampling profiler slows Python down; the shares are what to read, and the milliseconds
only beside each other in one run.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_pages import SETTINGS, build, most_prolific_author, session_cookie  # noqa: E402
from bench.serve import Server, app_env, command_line, free_port  # noqa: E402

# Markers of a phase, by function name and the end of its file's path. The innermost
# marker on a sample's stack names its phase: the user loaded from a template is still
# user loading.
PHASES = [
    ('wsgi_app', 'flask/app.py', 'Flask: contexts, routing, request and response objects'),
    ('preprocess_request', 'flask/app.py', 'before_request hooks'),
    ('dispatch_request', 'flask/app.py', 'view'),
    ('render_template', 'flask/templating.py', 'template rendering'),
    ('process_response', 'flask/app.py', 'after_request hooks'),
    ('open_session', 'flask/sessions.py', 'session cookie'),
    ('open_session', 'app/auth/sessions.py', 'session cookie'),
    ('save_session', 'flask/sessions.py', 'session cookie'),
    ('_load_user', 'flask_login/login_manager.py', 'user and session row'),
    ('load_user', 'app/auth/sessions.py', 'user and session row'),
    ('handle_error', 'gunicorn/workers/sync.py', 'gunicorn'),
]
GUNICORN = 'gunicorn: HTTP parsing, sockets'
IDLE = 'waiting for a request'
# What a sample is doing, by the innermost frame that says so.
KINDS = [
    ('sqlalchemy/engine/default.py', 'SQL (driver)', ('do_execute', 'do_executemany')),
    ('sqlalchemy/engine/cursor.py', 'SQL (driver)', ('fetchall', 'fetchone', 'fetchmany')),
    ('psycopg/', 'SQL (driver)', None),
    ('sqlalchemy/', 'SQLAlchemy', None),
    ('flask_wtf/', 'forms, CSRF', None),
    ('wtforms/', 'forms, CSRF', None),
    ('werkzeug/routing/', 'url_for', None),
    ('app/avatars.py', 'avatars', None),
]
COLUMNS = ['SQL (driver)', 'SQLAlchemy', 'forms, CSRF', 'url_for', 'avatars', 'other']


def _frames(stack):
    for identifier in stack:
        function, path, *_ = identifier.split('\x00')
        yield function, path


def classify(stack):
    """(phase, kind) of one sample's stack, outermost frame first."""
    frames = list(_frames(stack))
    phase = GUNICORN
    for function, path in frames:
        for name, suffix, label in PHASES:
            if function == name and path.endswith(suffix):
                phase = label
    if phase == GUNICORN and frames:
        function, path = frames[-1]
        if path.endswith(('selectors.py', 'gunicorn/workers/sync.py')) and function in (
            'select',
            'wait',
            'accept',
        ):
            return IDLE, 'other'
    kind = 'other'
    for function, path in reversed(frames):
        for fragment, label, functions in KINDS:
            if fragment in path and (functions is None or function in functions):
                kind = label
                break
        else:
            continue
        break
    if kind == 'url_for' and not any(f == 'url_for' for f, _ in frames):
        kind = 'other'  # routing the request itself is the framework's
    return phase, kind


def summarise(session, requests):
    """Milliseconds per request, by phase and by kind."""
    table = defaultdict(lambda: defaultdict(float))
    for stack, seconds in session.frame_records:
        phase, kind = classify(stack)
        table[phase][kind] += seconds * 1000 / requests
    return table


def print_table(table, requests, page):
    order = [
        GUNICORN,
        'Flask: contexts, routing, request and response objects',
        'session cookie',
        'before_request hooks',
        'user and session row',
        'view',
        'template rendering',
        'after_request hooks',
    ]
    total = sum(sum(kinds.values()) for phase, kinds in table.items() if phase != IDLE)
    print(f'\n{page}: {requests} requests profiled, {total:.2f} ms of worker time each')
    header = f'{"phase":<56}{"ms":>6}{"share":>7}' + ''.join(f'{c:>14}' for c in COLUMNS)
    print(header)
    for phase in order + sorted(set(table) - set(order) - {IDLE}):
        kinds = table.get(phase, {})
        ms = sum(kinds.values())
        cells = ''.join(f'{kinds.get(c, 0):>14.2f}' for c in COLUMNS)
        print(f'{phase:<56}{ms:>6.2f}{ms / total:>7.0%}{cells}')
    idle = sum(table.get(IDLE, {}).values())
    print(f'({IDLE}: {idle:.2f} ms per request, left out)')


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--page', default='/explore', help='/explore, /index, /user or /login')
    parser.add_argument('--posts', type=int, default=200_000)
    parser.add_argument('--seconds', type=int, default=15)
    parser.add_argument('--postgres', help='profile on this PostgreSQL database (emptied first)')
    parser.add_argument('--tree', help="also write pyinstrument's call tree to this file")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp())
    try:
        url = args.postgres or f'sqlite:///{workdir}/profile.db'
        port = free_port()
        build(url, args.posts, port)
        page = args.page
        if page == '/user':
            page = '/user/' + most_prolific_author(url)
        out = workdir / 'profile.json'
        env = {**app_env(port, url, **SETTINGS), 'PROFILE_OUT': str(out)}
        server = Server(
            env, port, workers=1, threads=1, options=['-c', 'bench/profile_gunicorn.py']
        )
        try:
            cookie = None if page == '/login' else session_cookie(server.base)
            headers = ['-H', f'Cookie: {cookie}'] if cookie else []
            subprocess.run(
                ['wrk', '-t2', '-c8', f'-d{args.seconds}s', *headers, server.base + page],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        finally:
            server.stop()
        from pyinstrument.renderers import ConsoleRenderer
        from pyinstrument.session import Session

        session = Session.load(out)
        requests = int(out.with_suffix('.requests').read_text())
        print(f'load average: {" ".join(f"{v:.2f}" for v in os.getloadavg())}')
        print_table(summarise(session, requests), requests, args.page)
        if args.tree:
            renderer = ConsoleRenderer(
                unicode=True, color=False, show_all=False, time='percent_of_total'
            )
            Path(args.tree).write_text(renderer.render(session))
        print(f'command: {command_line()}')
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    main()
