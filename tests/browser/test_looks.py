"""How pages look on a desktop (1280 px) and a phone (390 px), with and without scripts."""

import re
import uuid

import pytest
from playwright.sync_api import expect

from tests.browser.test_journeys import login, register
from tests.helpers import CHROMIUM, CHROMIUM_FLAGS
from tests.liveserver import LiveServer

WIDTHS = [1280, 390]
ERROR_RED = 'rgb(180, 35, 24)'  # --error in style.css

# How far apart, vertically, the middles of the navigation's links are: 0 on one row.
NAV_SPREAD = """() => {
    const middles = [...document.querySelectorAll('.nav a, .nav button')].map(el => {
        const box = el.getBoundingClientRect();
        return box.top + box.height / 2;
    });
    return Math.max(...middles) - Math.min(...middles);
}"""
# Babel's medium date and short time in English, in UTC: "Nov 25, 2026, 4:05 AM UTC".
ENGLISH_MOMENT = r'[A-Z][a-z]{2} \d{1,2}, \d{4}, \d{1,2}:\d\d\s[AP]M UTC'
OVERFLOWS = '() => document.documentElement.scrollWidth > document.documentElement.clientWidth'


@pytest.fixture(params=WIDTHS, ids=lambda width: f'{width}px')
def sized_page(request, browser, live_server):
    """A fresh browser context as wide as a desktop or a phone screen."""
    context = browser.new_context(
        base_url=live_server, viewport={'width': request.param, 'height': 800}
    )
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def new_name(length=10):
    return ('u' + uuid.uuid4().hex * 3)[:length]


def registered_and_logged_in(page, camera, username):
    register(page, camera, username, email=f'{username[:20]}@example.com')
    login(page, username)
    page.wait_for_url('**/index')


def test_the_navigation_stays_on_one_row(sized_page, camera):
    page = sized_page
    page.goto('/login')
    assert page.evaluate(NAV_SPREAD) < 4
    assert not page.evaluate(OVERFLOWS)
    registered_and_logged_in(page, camera, new_name())
    assert page.evaluate(NAV_SPREAD) < 4
    assert not page.evaluate(OVERFLOWS)
    camera.shoot(page, 'index')


def test_errors_are_red_and_successes_green(sized_page, camera):
    page = sized_page
    page.goto('/register')
    page.get_by_role('button', name='Register').click()
    # Each check waits for the page's stylesheet: the text can be there before it.
    expect(page.locator('#username')).to_have_css('border-top-color', ERROR_RED)
    camera.shoot(page, 'register-errors')

    username = new_name()
    registered_and_logged_in(page, camera, username)
    page.get_by_label('Say something').fill('Green for good news')
    page.get_by_role('button', name='Submit').click()
    success = page.locator('.flash')
    expect(success).to_have_text('Your post is now live!')
    expect(success).to_have_css('color', 'rgb(30, 86, 49)')
    page.get_by_role('button', name='Logout').click()
    page.wait_for_url('**/login')
    login(page, username, 'not-the-password')
    error = page.locator('.flash')
    expect(error).to_have_text('Invalid username or password')
    expect(error).to_have_css('color', ERROR_RED)
    camera.shoot(page, 'login-error')


def test_a_long_username_is_never_broken_mid_word(sized_page, camera):
    page = sized_page
    username = new_name(64)
    registered_and_logged_in(page, camera, username)
    page.get_by_label('Say something').fill('A post from someone with a very long name')
    page.get_by_role('button', name='Submit').click()
    for path in ('/index', '/explore', f'/user/{username}'):
        page.goto(path)
        assert not page.evaluate(OVERFLOWS), path
        names = page.locator('.username').all()
        assert any(name.inner_text() == username for name in names), path
        for name in names:
            lines = name.evaluate(
                """el => Math.round(el.getBoundingClientRect().height
                                  / parseFloat(getComputedStyle(el).lineHeight))"""
            )
            assert lines == 1, path
        camera.shoot(page, path.strip('/').split('/')[0])


def test_the_post_box_counts_down_and_dates_read_as_time_ago(sized_page, camera):
    page = sized_page
    registered_and_logged_in(page, camera, new_name())
    counter = page.locator('#post-count')
    assert counter.inner_text() == '140 characters left'
    page.get_by_label('Say something').fill('Hello, world')
    assert counter.inner_text() == '128 characters left'
    camera.shoot(page, 'counting')
    page.get_by_role('button', name='Submit').click()
    page.wait_for_url('**/index')
    time = page.locator('.post time').first
    assert time.inner_text() == 'just now'
    assert re.fullmatch(ENGLISH_MOMENT, time.get_attribute('data-utc'))
    camera.shoot(page, 'posted')


def test_without_scripts_every_page_still_works(browser, live_server, camera):
    context = browser.new_context(
        base_url=live_server, java_script_enabled=False, viewport={'width': 390, 'height': 800}
    )
    page = context.new_page()
    try:
        username = new_name()
        registered_and_logged_in(page, camera, username)
        assert page.locator('#post-count').inner_text() == 'Up to 140 characters.'
        assert page.get_by_label('Say something').get_attribute('maxlength') == '140'
        page.get_by_label('Say something').fill('Posted with scripts off')
        page.get_by_role('button', name='Submit').click()
        page.wait_for_url('**/index')
        expect(page.get_by_text('Posted with scripts off')).to_be_visible()
        time = page.locator('.post time').first.inner_text()
        assert re.fullmatch(ENGLISH_MOMENT, time)
        camera.shoot(page, 'index-without-scripts')
    finally:
        context.close()


def wait_for_mail(page, count):
    """Reload the inbox until it lists ``count`` messages (the sink gets them within a second)."""
    for _ in range(100):
        if page.locator('.mail-item').count() >= count:
            return
        page.wait_for_timeout(200)
        page.reload()
    raise AssertionError(f'the inbox did not list {count} message(s)')


def test_the_inbox_shows_the_reset_email_and_its_link_works(browser, dev_site, camera):
    username = new_name()
    for number, width in enumerate(WIDTHS, start=1):
        context = browser.new_context(
            base_url=dev_site.url, viewport={'width': width, 'height': 900}
        )
        page = context.new_page()
        page.set_default_timeout(15_000)
        try:
            if number == 1:
                register(page, camera, username)
            page.goto('/reset_password_request')
            page.get_by_label('Email').fill(f'{username}@example.com')
            page.get_by_role('button', name='Request Password Reset').click()
            page.wait_for_url('**/login')
            page.get_by_role('link', name='/_mail').click()  # the development footer
            page.wait_for_url('**/_mail')
            wait_for_mail(page, number + 1)  # the confirmation link, then each reset
            assert not page.evaluate(OVERFLOWS)
            camera.shoot(page, f'inbox-{width}')
            page.locator('.mail-item', has_text='Reset Your Password').first.click()
            frame = page.frame_locator('iframe.mail-frame')
            button = frame.get_by_role('link', name='Reset your password')
            expect(button).to_be_visible()
            assert not page.evaluate(OVERFLOWS)
            camera.shoot(page, f'message-{width}')
            button.click()  # opens in the whole window, as for the recipient
            page.wait_for_url('**/reset_password')
            expect(page.get_by_role('heading', name='Reset Your Password')).to_be_visible()
            camera.shoot(page, f'reset-form-{width}')
        finally:
            context.close()


@pytest.fixture(scope='module')
def deployment_over_http(tmp_path_factory):
    """gunicorn as deployed (https by default, login limited), reached over plain http."""
    folder = tmp_path_factory.mktemp('plain-http')
    site = LiveServer(
        folder / 'server.log',
        DATABASE_URL=f'sqlite:///{folder / "app.db"}',
        RATELIMIT_LOGIN_PER_ADDRESS='1 per hour',
    )
    site.settings['SERVER_NAME'] = f'microblog.test:{site.port}'  # not this machine: https
    site.upgrade().start()
    yield site
    site.stop()


def test_a_deployment_over_plain_http_says_what_to_set(browser, deployment_over_http, camera):
    site = deployment_over_http
    # microblog.test is 127.0.0.1 to this browser, but not "this machine" as 127.0.0.1 is:
    # it keeps Secure cookies to itself over http, as for any host on a network.
    mapped = browser.browser_type.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=[*CHROMIUM_FLAGS, '--host-resolver-rules=MAP microblog.test 127.0.0.1'],
    )
    try:
        for width in WIDTHS:
            page = mapped.new_page(
                base_url=f'http://microblog.test:{site.port}',
                viewport={'width': width, 'height': 800},
            )
            page.goto('/login')
            login(page, 'susan', 'not-the-password')
            page.get_by_role('heading', name='400 Bad Request').wait_for()
            expect(page.get_by_text('The CSRF session token is missing.')).to_be_visible()
            expect(page.get_by_text('PREFERRED_URL_SCHEME=http')).to_be_visible()
            assert not page.evaluate(OVERFLOWS)
            camera.shoot(page, f'csrf-over-http-{width}')
            page.close()
    finally:
        mapped.close()


def test_the_429_page_says_how_long_to_wait(browser, deployment_over_http, camera):
    for width in WIDTHS:
        context = browser.new_context(
            base_url=f'http://127.0.0.1:{deployment_over_http.port}',
            viewport={'width': width, 'height': 800},
        )
        page = context.new_page()
        try:
            if width == WIDTHS[0]:  # the one attempt an hour allows
                login(page, 'susan', 'not-the-password')
                page.get_by_text('Invalid username or password').wait_for()
            login(page, 'susan', 'not-the-password')
            page.get_by_role('heading', name='Too many requests').wait_for()
            expect(page.get_by_text('Please wait 1 hour and try again.')).to_be_visible()
            camera.shoot(page, f'429-{width}')
        finally:
            context.close()
