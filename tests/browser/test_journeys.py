"""Journeys through Microblog in headless Chromium, against a real server and SMTP server."""

import re
import time
import uuid

from tests.helpers import PASSWORD

NEW_PASSWORD = 'quiet-Meadow-lantern-42'


def unique(name):
    return f'{name}{uuid.uuid4().hex[:6]}'


def register(page, camera, username, password=PASSWORD, email=None):
    page.goto('/register')
    camera.shoot(page, 'register')
    page.get_by_label('Username').fill(username)
    page.get_by_label('Email').fill(email or f'{username}@example.com')
    page.get_by_label('Password', exact=True).fill(password)
    page.get_by_label('Repeat Password').fill(password)
    page.get_by_role('button', name='Register').click()
    page.wait_for_url('**/login')


def login(page, username, password=PASSWORD):
    page.goto('/login')
    page.get_by_label('Username').fill(username)
    page.get_by_label('Password').fill(password)
    page.get_by_role('button', name='Sign In').click()


def logout(page):
    page.get_by_role('button', name='Logout').click()
    page.wait_for_url('**/login')
    assert page.locator('.flash').all_inner_texts() == ['You have been logged out.']


def email_to(mail_server, address, subject, deadline=20):
    """Wait, with a deadline, for the delivery thread of the server process to send it."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        for received in list(mail_server.messages):
            if address in received.rcpt_tos and received.message['Subject'] == subject:
                return received
        time.sleep(0.05)
    raise AssertionError(f'no "{subject}" email to {address}')


def test_register_login_post_and_logout(page, camera):
    username = unique('ann')
    register(page, camera, username)
    assert 'Congratulations, you are now a registered user!' in page.content()
    camera.shoot(page, 'login')
    login(page, username)
    page.wait_for_url('**/index')
    page.get_by_label('Say something').fill('My first post, from a real browser')
    page.get_by_role('button', name='Submit').click()
    page.wait_for_url('**/index')
    assert page.get_by_text('Your post is now live!').is_visible()
    assert page.get_by_text('My first post, from a real browser').is_visible()
    camera.shoot(page, 'index')
    page.get_by_role('link', name='Explore').click()
    page.wait_for_url('**/explore')
    assert page.get_by_text('My first post, from a real browser').is_visible()
    camera.shoot(page, 'explore')
    logout(page)
    camera.shoot(page, 'logged-out')
    assert page.get_by_role('heading', name='Sign In').is_visible()


def test_follow_and_unfollow(browser, live_server, page, camera):
    author = unique('bob')
    register(page, camera, author)
    login(page, author)
    page.get_by_label('Say something').fill(f'Hello from {author}')
    page.get_by_role('button', name='Submit').click()
    logout(page)

    reader = unique('cid')
    register(page, camera, reader)
    login(page, reader)
    page.wait_for_url('**/index')
    assert page.get_by_text(f'Hello from {author}').count() == 0
    page.goto(f'/user/{author}')
    camera.shoot(page, 'profile-before-follow')
    page.get_by_role('button', name='Follow').click()
    assert page.get_by_text(f'You are following {author}!').is_visible()
    assert page.get_by_text('1 follower, 0 following.').is_visible()
    camera.shoot(page, 'profile-following')
    page.get_by_role('link', name='Home').click()
    assert page.get_by_text(f'Hello from {author}').is_visible()
    camera.shoot(page, 'index-with-followed-post')
    page.goto(f'/user/{author}')
    page.get_by_role('button', name='Unfollow').click()
    assert page.get_by_text(f'You are not following {author}.').is_visible()
    page.get_by_role('link', name='Home').click()
    assert page.get_by_text(f'Hello from {author}').count() == 0


def test_edit_profile(page, camera):
    username = unique('dee')
    register(page, camera, username)
    login(page, username)
    page.get_by_role('link', name='Profile').click()
    page.get_by_role('link', name='Edit your profile').click()
    camera.shoot(page, 'edit-profile')
    page.get_by_label('About me').fill('I grow tomatoes and write short posts.')
    page.get_by_role('button', name='Submit').click()
    assert page.get_by_text('Your changes have been saved.').is_visible()
    page.get_by_role('link', name='Profile').click()
    assert page.get_by_text('I grow tomatoes and write short posts.').is_visible()
    camera.shoot(page, 'profile')


def shoot_email(browser, camera, html, label):
    """Render an HTML email in a blank page of its own (no site CSP) and screenshot it."""
    viewer = browser.new_page(viewport={'width': 700, 'height': 600})
    viewer.set_content(html)
    camera.shoot(viewer, label)
    viewer.close()


def test_forgot_password(browser, page, camera, mail_server, live_server):
    username = unique('eve')
    address = f'{username}@example.com'
    register(page, camera, username)
    origins = set()
    page.on('request', lambda request: origins.add(re.match(r'\w+://[^/]+', request.url)[0]))

    page.goto('/login')
    page.get_by_role('link', name='Click to Reset It').click()
    page.wait_for_url('**/reset_password_request')
    camera.shoot(page, 'reset-request')
    page.get_by_label('Email').fill(address.upper())
    page.get_by_role('button', name='Request Password Reset').click()
    page.wait_for_url('**/login')
    assert page.get_by_text(
        'Check your email for the instructions to reset your password'
    ).is_visible()
    camera.shoot(page, 'check-your-email')

    email = email_to(mail_server, address, '[Microblog] Reset Your Password')
    link = re.search(r'http://\S+/reset_password/\S+', email.part('text/plain'))[0]
    assert link.startswith(live_server)
    shoot_email(browser, camera, email.part('text/html'), 'reset-email')

    page.goto(link)
    page.wait_for_url('**/reset_password')
    assert '/reset_password/' not in page.url  # the token left the address bar
    camera.shoot(page, 'reset-form')
    page.get_by_label('Password', exact=True).fill(NEW_PASSWORD)
    page.get_by_label('Repeat Password').fill(NEW_PASSWORD)
    page.get_by_role('button', name='Set New Password').click()
    page.wait_for_url('**/login')
    assert page.get_by_text('Your password has been reset.').is_visible()
    camera.shoot(page, 'password-reset')
    assert origins == {live_server}  # nothing loaded from another origin

    login(page, username, PASSWORD)
    assert page.get_by_text('Invalid username or password').is_visible()
    camera.shoot(page, 'old-password-fails')
    login(page, username, NEW_PASSWORD)
    page.wait_for_url('**/index')
    logout(page)

    page.goto(link)
    page.wait_for_url('**/reset_password_request')
    assert page.get_by_text('This reset link is invalid or has expired.').is_visible()
    camera.shoot(page, 'spent-link')

    notice = email_to(mail_server, address, '[Microblog] Your password was changed')
    shoot_email(browser, camera, notice.part('text/html'), 'password-changed-email')


def error_next_to(page, field_id):
    """The error shown for a field: inside its .field box and named by aria-describedby."""
    field = page.locator(f'#{field_id}')
    described = (field.get_attribute('aria-describedby') or '').split(' ')[0]
    assert described, f'{field_id} has no aria-describedby'
    box = page.locator('.field', has=field)
    return box.locator(f'#{described}').inner_text()


def test_wrong_inputs_show_next_to_the_field(page, camera):
    page.goto('/register')
    page.get_by_role('button', name='Register').click()
    camera.shoot(page, 'register-empty')
    for field in ('username', 'email', 'password', 'password2'):
        assert error_next_to(page, field) == 'This field is required.'

    page.get_by_label('Username').fill(unique('fay'))
    page.get_by_label('Email').fill('not-an-email')
    page.get_by_label('Password', exact=True).fill(PASSWORD)
    page.get_by_label('Repeat Password').fill(PASSWORD + 'x')
    page.get_by_role('button', name='Register').click()
    camera.shoot(page, 'register-errors')
    # Registration says what email-validator found wrong (the reset form, below, does not).
    assert error_next_to(page, 'email') == 'An email address must have an @-sign.'
    assert error_next_to(page, 'password2') == 'Passwords must match.'

    page.goto('/reset_password_request')
    page.get_by_label('Email').fill('nobody-at-example')
    page.get_by_role('button', name='Request Password Reset').click()
    assert error_next_to(page, 'email') == 'This is not a valid email address.'
    camera.shoot(page, 'reset-request-error')


FIRST_FOCUSABLE = """() => document.querySelector('a[href], button, input:not([type=hidden])')
    .textContent"""


def test_login_by_keyboard(page, camera):
    username = unique('gus')
    register(page, camera, username)
    page.goto('/login')
    first = page.evaluate(FIRST_FOCUSABLE)
    assert first == 'Skip to content'  # keyboard users can jump past the navigation
    page.focus('#username')
    page.keyboard.type(username)
    page.keyboard.press('Tab')
    assert page.evaluate('document.activeElement.id') == 'password'
    page.keyboard.type(PASSWORD)
    page.keyboard.press('Tab')
    assert page.evaluate('document.activeElement.id') == 'remember_me'
    page.keyboard.press('Tab')
    assert page.evaluate('document.activeElement.id') == 'submit'
    page.keyboard.press('Enter')
    page.wait_for_url('**/index')
    camera.shoot(page, 'logged-in-by-keyboard')


UNLABELLED = """() => [...document.querySelectorAll('input, textarea, select')]
    .filter(el => !['hidden', 'submit'].includes(el.type))
    .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
    .map(el => el.name)"""

FOCUSABLE = """() => [...document.querySelectorAll('a[href], button, input, textarea')]
    .filter(el => el.type !== 'hidden' && el.tabIndex < 0).map(el => el.outerHTML)"""


def test_every_input_has_a_label_and_can_be_reached(page, camera):
    username = unique('hal')
    register(page, camera, username)
    anonymous = ['/login', '/register', '/reset_password_request']
    for path in anonymous:
        page.goto(path)
        assert page.evaluate(UNLABELLED) == [], path
        assert page.evaluate(FOCUSABLE) == [], path
    login(page, username)
    for path in ['/index', '/explore', f'/user/{username}', '/edit_profile', '/logout']:
        page.goto(path)
        assert page.evaluate(UNLABELLED) == [], path
        assert page.evaluate(FOCUSABLE) == [], path
        camera.shoot(page, path.strip('/').replace('/', '-'))
