"""Starting Microblog: development defaults out of the box, one-line refusals in production."""

import pytest

import config
from app import db, mailer
from app.auth.email import queue_password_reset_email
from app.mail import deliver_pending
from app.models import User
from tests.checkout import BIN, flask, fresh_checkout, run
from tests.helpers import PASSWORD, links_in

GOOD_KEY = 'a-deployment-secret-key-of-at-least-32-bytes'
MAKE_A_KEY = 'python -c "import secrets; print(secrets.token_hex(32))"'


def settings(**values):
    """The settings of a fresh checkout (nothing set), with ``values`` set."""
    unset = {
        'SECRET_KEY': None,
        'SECRET_KEY_FALLBACKS': [],
        'SERVER_NAME': None,
        'PREFERRED_URL_SCHEME': None,
        'SESSION_COOKIE_SECURE': None,
        'REMEMBER_COOKIE_SECURE': None,
    }
    return {**config.settings_of(config.Config), **unset, **values}


# The decisions, setting by setting


def test_debug_mode_on_this_machine_gets_the_development_defaults():
    checked = config.check_settings(settings(), debug=True)
    assert checked['SECRET_KEY'] == config.DEV_SECRET_KEY
    assert checked['SERVER_NAME'] == '127.0.0.1:5000'
    assert checked['PREFERRED_URL_SCHEME'] == 'http'
    assert checked['SESSION_COOKIE_SECURE'] is False
    assert checked['REMEMBER_COOKIE_SECURE'] is False


def test_debug_mode_keeps_a_server_name_on_this_machine():
    checked = config.check_settings(settings(SERVER_NAME='localhost:8000'), debug=True)
    assert checked['SERVER_NAME'] == 'localhost:8000'
    assert checked['SECRET_KEY'] == config.DEV_SECRET_KEY
    assert checked['PREFERRED_URL_SCHEME'] == 'http'


@pytest.mark.parametrize(
    ('debug', 'values', 'message'),
    [
        (False, {}, f'SECRET_KEY is not set. Make one with {MAKE_A_KEY}'),
        (False, {'SECRET_KEY': config.DEV_SECRET_KEY}, 'SECRET_KEY is the public development key'),
        (False, {'SECRET_KEY': 'short-key'}, 'SECRET_KEY is 9 bytes long; it needs at least 32'),
        (
            False,
            {'SECRET_KEY': GOOD_KEY, 'SECRET_KEY_FALLBACKS': [config.DEV_SECRET_KEY]},
            'SECRET_KEY_FALLBACKS holds the public development key',
        ),
        (False, {'SECRET_KEY': GOOD_KEY}, 'SERVER_NAME is not set'),
        # A deployed machine, where .flaskenv turns debug on for cron's `flask` commands:
        # its own key means its links must not go to 127.0.0.1:5000 ...
        (True, {'SECRET_KEY': GOOD_KEY}, 'SERVER_NAME is not set'),
        # ... and its public address means they must not be signed with the public key.
        (True, {'SERVER_NAME': 'microblog.example.com'}, 'SECRET_KEY is not set'),
        (
            True,
            {'SERVER_NAME': 'microblog.example.com', 'SECRET_KEY': config.DEV_SECRET_KEY},
            'SECRET_KEY is the public development key',
        ),
        (True, {'MAIL_QUEUE': 'celery'}, "MAIL_QUEUE='celery': use thread, rq or none"),
        (True, {'PREFERRED_URL_SCHEME': 'ftp'}, "PREFERRED_URL_SCHEME='ftp': use https"),
        (True, {'MAIL_USE_TLS': True, 'MAIL_USE_SSL': True}, 'MAIL_USE_TLS and MAIL_USE_SSL'),
    ],
)
def test_unsafe_settings_are_refused_with_what_to_set(debug, values, message):
    with pytest.raises(config.ConfigError) as refusal:
        config.check_settings(settings(**values), debug=debug)
    line = str(refusal.value)
    assert line.startswith('Microblog cannot start: ')
    assert message in line
    assert '\n' not in line
    if 'SECRET_KEY is' in message:
        assert MAKE_A_KEY in line


def test_a_deployment_in_debug_mode_builds_https_links_to_its_own_address():
    values = {'SECRET_KEY': GOOD_KEY, 'SERVER_NAME': 'microblog.example.com'}
    checked = config.check_settings(settings(**values), debug=True)
    assert checked['SECRET_KEY'] == GOOD_KEY
    assert checked['PREFERRED_URL_SCHEME'] == 'https'
    assert checked['SESSION_COOKIE_SECURE'] is True


@pytest.mark.parametrize(('scheme', 'secure'), [('https', True), ('http', False)])
def test_cookies_are_secure_when_the_site_is_served_over_https(scheme, secure):
    values = {
        'SECRET_KEY': GOOD_KEY,
        'SERVER_NAME': 'microblog.example.com',
        'PREFERRED_URL_SCHEME': scheme,
    }
    checked = config.check_settings(settings(**values), debug=False)
    assert checked['SESSION_COOKIE_SECURE'] is secure
    assert checked['REMEMBER_COOKIE_SECURE'] is secure


@pytest.mark.sqlite_only
def test_the_reset_link_of_a_deployment_in_debug_mode_goes_to_its_public_address(make_app):
    app = make_app(
        DEBUG=True,
        SECRET_KEY=GOOD_KEY,
        SERVER_NAME='microblog.example.com',
        PREFERRED_URL_SCHEME=None,
        SESSION_COOKIE_SECURE=None,
        MAIL_QUEUE='none',  # as for cron: `flask mail send-pending` does the pass
    )
    with app.app_context(), mailer.record_messages() as sent:
        user = User(username='susan', email='susan@example.com')
        user.set_password(PASSWORD)
        db.session.add(user)
        queue_password_reset_email('susan@example.com')
        db.session.commit()
        deliver_pending()
    [message] = sent
    links = links_in(message.body)
    assert links and all(link.startswith('https://microblog.example.com/') for link in links)


# A fresh checkout, as a newcomer and as an admin use it


@pytest.fixture(scope='module')
def checkout(tmp_path_factory):
    """A fresh copy of the project, with no .env: what `git clone` gives."""
    return fresh_checkout(tmp_path_factory.mktemp('clone') / 'microblog')


def test_flask_commands_work_out_of_the_box(checkout):
    help_text = flask(checkout, '--help')
    assert help_text.returncode == 0, help_text.stderr
    for command in ('db', 'mail', 'seed', 'run', 'shell'):
        assert f'  {command} ' in help_text.stdout

    upgrade = flask(checkout, 'db', 'upgrade')
    assert upgrade.returncode == 0, upgrade.stderr
    seed = flask(checkout, 'seed', '--users', '3', '--posts', '5', '--follows', '1')
    assert seed.returncode == 0, seed.stderr
    assert 'Added 3 users, 5 posts' in seed.stdout
    status = flask(checkout, 'mail', 'status')
    assert status.returncode == 0, status.stderr
    assert 'pending  0' in status.stdout
    assert 'server   not set (MAIL_SERVER)' in status.stdout  # not "None:25"
    for result in (help_text, upgrade, seed, status):
        assert 'Traceback' not in result.stderr
        assert 'Microblog startup' not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ('env_file', 'message'),
    [
        (
            'FLASK_DEBUG=0\n',
            f'Microblog cannot start: SECRET_KEY is not set. Make one with {MAKE_A_KEY}',
        ),
        (f'SECRET_KEY={GOOD_KEY}\n', 'Microblog cannot start: SERVER_NAME is not set.'),
        ('FLASK_DEBUG=0\nMAIL_USE_TLS=maybe\n', "Microblog cannot start: MAIL_USE_TLS='maybe'"),
    ],
)
def test_a_production_command_refuses_in_one_line(tmp_path, env_file, message):
    checkout = fresh_checkout(tmp_path / 'microblog')
    (checkout / '.env').write_text(env_file)
    for args in (('mail', 'send-pending'), ('db', 'upgrade'), ('--help',)):
        result = flask(checkout, *args)
        assert result.returncode == 1
        assert result.stderr.strip().startswith(message), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (checkout / 'app.db').exists()


def test_gunicorn_refuses_in_one_line_before_any_worker_starts(tmp_path):
    checkout = fresh_checkout(tmp_path / 'microblog')
    (checkout / '.env').write_text('SERVER_NAME=microblog.example.com\n')
    result = run(checkout, str(BIN / 'gunicorn'), '-b', '127.0.0.1:0', 'microblog:app', timeout=60)
    assert result.returncode == 1
    refusals = [line for line in result.stderr.splitlines() if 'Microblog cannot start' in line]
    assert refusals == [
        f'Microblog cannot start: SECRET_KEY is not set. Make one with {MAKE_A_KEY} '
        'and set SECRET_KEY=<it> in .env or the environment.'
    ]
    assert 'Traceback' not in result.stderr
    assert 'Booting worker' not in result.stderr


def test_another_programs_run_command_is_not_flask_run(monkeypatch):
    """Only Flask's `run` starts serving at once: a test runner's `run` starts nothing."""
    import click

    from app import _serving_with_flask_run

    monkeypatch.delenv('FLASK_DEBUG', raising=False)
    seen = []

    @click.group()
    def tool():
        pass

    @tool.command('run')
    def run():
        seen.append(_serving_with_flask_run())

    tool.main(['run'], prog_name='tool', standalone_mode=False)
    assert seen == [False]
