"""The README's deployment blocks, run as written in a temporary folder, down to a reset email.

Each block of "Deploying" is taken from README.md and run with bash, with only the example
host names, ports and names replaced by the test's own (each replacement must find its text
in the README, so that the test follows the README rather than its own idea of it) and one
line added to .env: MAIL_POLL_INTERVAL=1, so that the reset email, which waits for the
delivery cadence, arrives within a second. Long-running lines (gunicorn, the RQ worker) are
started in the background. The mail server is a real aiosmtpd with STARTTLS, a certificate
the processes trust (SSL_CERT_FILE) and the README's login. A visitor then talks to gunicorn as
nginx would (Host: microblog.example.com, X-Forwarded-Proto: https), registers, asks for a
reset link, follows it from the email and sets a new password.
"""

import os
import re
import secrets
import shlex
import signal
import subprocess
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from tests.checkout import ROOT, clean_env, fresh_checkout
from tests.helpers import PASSWORD, TEST_DATABASE_URL, TEST_REDIS_URL
from tests.liveserver import Visitor, answers, wait_for
from tests.mailserver import MailServer, accept_login, free_port

# They install a virtualenv and need PostgreSQL and Redis: they run with the CI services.
with_ci_services = pytest.mark.skipif(
    not (TEST_DATABASE_URL and TEST_REDIS_URL),
    reason='the deployment tests run with the CI services (TEST_DATABASE_URL, TEST_REDIS_URL)',
)

README = ROOT / 'README.md'
SITE = 'microblog.example.com'
NEW_PASSWORD = 'quiet-Meadow-lantern-42'
SERVING = ('.venv/bin/gunicorn ', '.venv/bin/flask mail worker')
PROXY = {'Host': SITE, 'X-Forwarded-Proto': 'https', 'X-Forwarded-For': '203.0.113.7'}
DEPLOY_REDIS_URL = os.environ.get('TEST_DEPLOY_REDIS_URL') or TEST_REDIS_URL
DB_PREFIX = os.environ.get('TEST_DEPLOY_DB_PREFIX') or 'readme_'


def section(title):
    """The text of the README's section ``### title``, up to the next heading."""
    text = README.read_text()
    start = text.index(f'\n### {title}\n')
    following = re.search(r'\n##+ ', text[start + 1 :])
    return text[start : start + 1 + following.start()] if following else text[start:]


def shell_blocks(text):
    """The ```sh blocks of a piece of Markdown, in order."""
    return re.findall(r'```sh\n(.*?)```', text, re.DOTALL)


def adapted(text, replacements):
    """``text`` with each (README text, test's text) replaced; each must be there."""
    for old, new in replacements:
        assert old in text, f'the README no longer says {old!r}'
        text = text.replace(old, new)
    return text


class Deployment:
    """A folder where the README's blocks run, and the processes they leave serving."""

    def __init__(self, folder, env, logs):
        self.folder = folder
        self.env = env
        self.logs = logs
        self.processes = []

    def run(self, block):
        """Run a block: its commands in order, the serving ones in the background."""
        lines = block.splitlines(keepends=True)
        script = ''.join(line for line in lines if not line.startswith(SERVING))
        if script.strip():
            result = subprocess.run(
                ['bash', '-euo', 'pipefail', '-c', script],
                cwd=self.folder,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert result.returncode == 0, result.stdout + result.stderr
            self.output = result.stdout + result.stderr
        for line in lines:
            if line.startswith(SERVING):
                self.serve(line.strip())

    def serve(self, command):
        log = open(self.logs / f'serving-{len(self.processes)}.log', 'w')  # noqa: SIM115
        process = subprocess.Popen(
            ['bash', '-c', f'exec {command}'],
            cwd=self.folder,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append((process, log))

    def stop(self):
        """Stop what serves (SIGTERM, as systemd would) and return everything it logged."""
        for process, _ in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process, log in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(30)
            log.close()
        return ''.join(path.read_text() for path in sorted(self.logs.glob('serving-*.log')))


@pytest.fixture(scope='module')
def certificate_file(tmp_path_factory):
    """A certificate for 127.0.0.1 that the deployment's processes trust, as a CA's would be."""
    from tests.tls import make_certificate

    made = make_certificate(tmp_path_factory.mktemp('tls'))
    if made is None:
        pytest.skip('openssl is not installed: no certificate for the STARTTLS mail server')
    return made


@pytest.fixture(scope='module')
def virtualenv(tmp_path_factory):
    """The README's install line, run once: the deployments' folders then share its .venv."""
    folder = tmp_path_factory.mktemp('install')
    (folder / 'requirements.txt').write_text((ROOT / 'requirements.txt').read_text())
    first_block = shell_blocks(section('One machine'))[0]
    [install] = [line for line in first_block.splitlines() if 'pip install' in line]
    result = subprocess.run(
        ['bash', '-euo', 'pipefail', '-c', install],
        cwd=folder,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return folder / '.venv'


@pytest.fixture
def smtp_server(certificate_file):
    """The mail provider of the README: STARTTLS required, and the README's login."""
    server = MailServer(
        tls_context=certificate_file.server_context(),
        require_starttls=True,
        authenticator=accept_login('microblog@example.com', 'your-smtp-password'),
    ).start()
    yield server
    server.stop()


@pytest.fixture
def deployment(tmp_path, virtualenv, certificate_file):
    """A fresh clone in a temporary folder, sharing the installed virtualenv."""
    folder = fresh_checkout(tmp_path / 'microblog')
    (folder / '.venv').symlink_to(virtualenv, target_is_directory=True)
    logs = tmp_path / 'logs'
    logs.mkdir()
    env = clean_env(SSL_CERT_FILE=certificate_file.cert)
    env['PATH'] = f'{virtualenv / "bin"}{os.pathsep}{env["PATH"]}'
    deployed = Deployment(folder, env, logs)
    yield deployed
    deployed.stop()


def mail_replacements(smtp_server):
    return [
        ('MAIL_SERVER=smtp.example.com', 'MAIL_SERVER=127.0.0.1'),
        ('MAIL_PORT=587', f'MAIL_PORT={smtp_server.port}'),
        ('ADMINS=you@example.com\nEOF', 'ADMINS=you@example.com\nMAIL_POLL_INTERVAL=1\nEOF'),
    ]


def reset_a_password(site_url, smtp_server):
    """Register, ask for a reset link, follow it from the email, set a new password, log in."""
    susan = Visitor(site_url, headers=PROXY)
    registered = susan.submit(
        '/register',
        username='susan',
        email='susan@example.com',
        password=PASSWORD,
        password2=PASSWORD,
    )
    assert registered == (302, '/login')
    assert susan.submit('/reset_password_request', email='susan@example.com') == (302, '/login')

    email = smtp_server.wait_for(
        lambda received: received.message['Subject'] == '[Microblog] Reset Your Password'
    )
    assert email.rcpt_tos == ['susan@example.com']
    link = re.search(r'https://\S+/reset_password/\S+', email.part('text/plain'))[0]
    assert link.startswith(f'https://{SITE}/reset_password/')  # never the development address
    assert link in email.part('text/html')
    status, form = susan.get(urlsplit(link).path)
    assert status == 200 and 'Set New Password' in form
    changed = susan.submit('/reset_password', password=NEW_PASSWORD, password2=NEW_PASSWORD)
    assert changed == (302, '/login')
    again = Visitor(site_url, headers=PROXY)
    assert again.submit('/login', username='susan', password=NEW_PASSWORD) == (302, '/index')


@pytest.mark.deployment
@with_ci_services
def test_one_machine(deployment, smtp_server):
    port = free_port()
    block = adapted(
        section('One machine'),
        [*mail_replacements(smtp_server), ('-b 127.0.0.1:8000', f'-b 127.0.0.1:{port}')],
    )
    [commands] = shell_blocks(block)
    deployment.run(commands)
    # `flask mail test` went through, over STARTTLS with the login.
    assert f'Sent: 127.0.0.1:{smtp_server.port} accepted the message for you@example.com.' in (
        deployment.output
    )
    assert smtp_server.messages[0].message['Subject'] == '[Microblog] Test message'

    site = f'http://127.0.0.1:{port}'
    wait_for(lambda: answers(site + '/login'), 'gunicorn answering')
    reset_a_password(site, smtp_server)
    log = deployment.stop()
    assert 'Traceback' not in log
    assert 'Exception on' not in log


@pytest.fixture
def postgres_names():
    """A role and database name of the test's own on TEST_DATABASE_URL's server; both dropped."""
    name = f'{DB_PREFIX}{secrets.token_hex(4)}'
    yield name
    engine = sa.create_engine(TEST_DATABASE_URL, isolation_level='AUTOCOMMIT')
    with engine.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(sa.text(f'DROP ROLE IF EXISTS "{name}"'))
    engine.dispose()


@pytest.fixture
def redis_database():
    """The Redis database the deployment's queue and limits use, emptied before and after."""
    from redis import Redis

    connection = Redis.from_url(DEPLOY_REDIS_URL)
    connection.flushdb()
    yield DEPLOY_REDIS_URL
    connection.flushdb()
    connection.close()


@pytest.mark.deployment
@with_ci_services
def test_several_machines(deployment, smtp_server, postgres_names, redis_database):
    server = sa.engine.make_url(TEST_DATABASE_URL)
    name = postgres_names
    psql = ' '.join(
        shlex.quote(part)
        for part in [
            'psql',
            '-v',
            'ON_ERROR_STOP=1',
            '-h',
            server.host or '127.0.0.1',
            '-p',
            str(server.port or 5432),
            '-U',
            server.username or 'postgres',
            '-d',
            server.database,
        ]
    )
    port = free_port()
    text = adapted(
        section('Several machines'),
        [
            ('sudo -u postgres psql', psql),
            ('CREATE ROLE microblog ', f'CREATE ROLE {name} '),
            ('CREATE DATABASE microblog OWNER microblog', f'CREATE DATABASE {name} OWNER {name}'),
            (
                'postgresql+psycopg://microblog:choose-a-password@db.internal/microblog',
                f'postgresql+psycopg://{name}:choose-a-password@{server.host or "127.0.0.1"}:'
                f'{server.port or 5432}/{name}',
            ),
            ('REDIS_URL=redis://redis.internal:6379/0', f'REDIS_URL={redis_database}'),
            (
                'RATELIMIT_STORAGE_URI=redis://redis.internal:6379/1',
                f'RATELIMIT_STORAGE_URI={redis_database}',
            ),
            *mail_replacements(smtp_server),
            ('-b 0.0.0.0:8000', f'-b 127.0.0.1:{port}'),
        ],
    )
    blocks = shell_blocks(text)
    assert [block.split()[0] for block in blocks] == [
        'psql',
        'python3',
        '.venv/bin/gunicorn',
        '.venv/bin/flask',
    ]
    for block in blocks:  # the database, the first machine, a web machine, a worker machine
        deployment.run(block)

    site = f'http://127.0.0.1:{port}'
    wait_for(lambda: answers(site + '/login'), 'gunicorn answering')
    reset_a_password(site, smtp_server)  # sent by the RQ worker, through Redis
    log = deployment.stop()
    assert 'Traceback' not in log
    assert 'Exception on' not in log
    assert 'mail delivery: rq' in log  # the web processes only enqueue


def test_the_readme_blocks_hold_no_prose_in_env_lines():
    for title in ('One machine', 'Several machines'):
        for block in shell_blocks(section(title)):
            env = re.search(r'cat > \.env <<EOF\n(.*?)\nEOF', block, re.DOTALL)
            for line in env[1].splitlines() if env else []:
                # A comment, or NAME=value with one word or one command's output as value.
                assert re.fullmatch(r'#.*|[A-Z_]+=(\S*|\$\(.*\))', line), line
