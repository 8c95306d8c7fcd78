"""Redis stops while the site runs: rate limits fall back to memory, and pages keep working."""

import urllib.error
import urllib.parse
import urllib.request

import pytest
from limits.errors import StorageError

from tests.liveserver import LiveServer
from tests.redisserver import RedisServer, redis_server_missing

needs_redis_server = pytest.mark.skipif(
    bool(redis_server_missing()), reason=str(redis_server_missing())
)


def post(url, **fields):
    """POST a form without following the redirect; the status code."""
    data = urllib.parse.urlencode(fields).encode()
    request = urllib.request.Request(url, data=data, method='POST')
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.fixture
def redis_server():
    """A Redis of this test's own, which it stops mid-run."""
    server = RedisServer().start()
    yield server
    server.stop()


@needs_redis_server
def test_pages_keep_working_when_redis_stops(tmp_path, redis_server):
    site = LiveServer(
        tmp_path / 'server.log',
        DATABASE_URL=f'sqlite:///{tmp_path / "app.db"}',
        PREFERRED_URL_SCHEME='http',
        WTF_CSRF_ENABLED='false',
        RATELIMIT_STORAGE_URI=redis_server.url,
        RATELIMIT_LOGIN_PER_ADDRESS='4 per hour',
        MAIL_QUEUE='rq',
        REDIS_URL=redis_server.url,
    ).upgrade()
    site.start()
    try:
        login = {'username': 'nobody', 'password': 'not-the-password'}
        assert post(site.url + '/login', **login) == 200  # counted in Redis
        assert post(site.url + '/reset_password_request', email='susan@example.com') == 302

        redis_server.stop()

        statuses = [post(site.url + '/login', **login) for _ in range(5)]
        # Still limited, now counted in memory: four attempts, then the 429 page.
        assert statuses == [200, 200, 200, 200, 429]
        assert post(site.url + '/reset_password_request', email='susan@example.com') == 302
        assert post(site.url + '/register', username='ann') == 200
        with urllib.request.urlopen(site.url + '/login', timeout=10) as page:
            assert page.status == 200
    finally:
        site.stop()
    log = site.log()
    assert 'Rate limit storage unreachable - falling back to in-memory storage' in log
    assert 'Could not enqueue email delivery' in log  # the reset stays in the outbox
    assert 'Traceback' not in log
    assert 'Exception on' not in log


def test_the_login_and_reset_counters_count_here_when_redis_fails_between_two_checks(
    make_app, monkeypatch, caplog
):
    from app import ratelimits

    def storage_gone(*args, **kwargs):
        raise StorageError(ConnectionError('Redis went away'))

    app = make_app(RATELIMIT_ENABLED=True)
    with app.test_request_context('/login', method='POST'):
        counters = ratelimits.Counters()
        monkeypatch.setattr(counters.strategy, 'hit', storage_gone)
        assert counters.take('RATELIMIT_LOGIN_PER_USERNAME', 'test', 'susan') is True
        counters.give_back()
    assert 'Rate limit storage unavailable' in caplog.text
