"""Journeys through Microblog in headless Chromium, against a real server and SMTP server."""

import re
import time
import uuid

from playwright.sync_api import expect

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
    assert page.locator('.flash').inner_text().startswith('Check your email: we sent a message to')
    camera.shoot(page, 'login')
    login(page, username)
    page.wait_for_url('**/index')
    page.get_by_label('Say something').fill('My first post, from a real browser')
    page.get_by_role('button', name='Submit').click()
    page.wait_for_url('**/index')
    expect(page.get_by_text('Your post is now live!')).to_be_visible()
    expect(page.get_by_text('My first post, from a real browser')).to_be_visible()
    camera.shoot(page, 'index')
    page.get_by_role('link', name='Explore').click()
    page.wait_for_url('**/explore')
    expect(page.get_by_text('My first post, from a real browser')).to_be_visible()
    camera.shoot(page, 'explore')
    logout(page)
    camera.shoot(page, 'logged-out')
    expect(page.get_by_role('heading', name='Sign In')).to_be_visible()


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
    expect(page.get_by_text(f'You are following {author}!')).to_be_visible()
    expect(page.get_by_text('1 follower, 0 following.')).to_be_visible()
    camera.shoot(page, 'profile-following')
    page.get_by_role('link', name='Home').click()
    expect(page.get_by_text(f'Hello from {author}')).to_be_visible()
    camera.shoot(page, 'index-with-followed-post')
    page.goto(f'/user/{author}')
    page.get_by_role('button', name='Unfollow').click()
    expect(page.get_by_text(f'You are not following {author}.')).to_be_visible()
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
    expect(page.get_by_text('Your changes have been saved.')).to_be_visible()
    page.get_by_role('link', name='Profile').click()
    expect(page.get_by_text('I grow tomatoes and write short posts.')).to_be_visible()
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
    expect(
        page.get_by_text('Check your email for the instructions to reset your password')
    ).to_be_visible()
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
    expect(page.get_by_text('Your password has been reset.')).to_be_visible()
    camera.shoot(page, 'password-reset')
    assert origins == {live_server}  # nothing loaded from another origin

    login(page, username, PASSWORD)
    expect(page.get_by_text('Invalid username or password')).to_be_visible()
    camera.shoot(page, 'old-password-fails')
    login(page, username, NEW_PASSWORD)
    page.wait_for_url('**/index')
    logout(page)

    page.goto(link)
    page.wait_for_url('**/reset_password_request')
    expect(page.get_by_text('This reset link is invalid or has expired.')).to_be_visible()
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


def wait_for_email(mail_server, address, text, deadline=20):
    """The first email to ``address`` whose text part contains ``text``, waiting for it."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        for received in list(mail_server.messages):
            body = ' '.join(received.part('text/plain').split())  # lines wrapped anywhere
            if address in received.rcpt_tos and text in body:
                return received
        time.sleep(0.05)
    raise AssertionError(f'no email to {address} saying {text!r}')


def link_in(email, path):
    """The link to ``path`` in the text part of an email, the same one as in its HTML part."""
    found = re.search(rf'http://\S+{path}\S+', email.part('text/plain'))[0]
    assert found in email.part('text/html')
    return found


def test_account_emails_from_registration_to_a_new_address(
    browser, page, camera, mail_server, live_server
):
    """Register, confirm, move to a new address, change the password, then forget it."""
    username = unique('fay')
    old, new = f'{username}@old.example', f'{username}@new.example'
    register(page, camera, username, email=old)
    camera.shoot(page, 'check-your-email')
    welcome = email_to(mail_server, old, '[Microblog] Confirm your email address')
    shoot_email(browser, camera, welcome.part('text/html'), 'confirm-email')
    login(page, username)
    page.wait_for_url('**/index')
    page.get_by_role('link', name='Profile').click()
    expect(page.get_by_text('is not confirmed yet')).to_be_visible()
    camera.shoot(page, 'profile-unconfirmed')

    page.goto(link_in(welcome, '/confirm_email/'))
    camera.shoot(page, 'confirm-page')
    page.get_by_role('button', name='Confirm my address').click()
    page.wait_for_url('**/settings')
    expect(page.get_by_text(f'Thank you: {old} is confirmed.')).to_be_visible()
    assert page.locator('.badge-ok').inner_text() == 'confirmed'
    camera.shoot(page, 'settings-confirmed')

    page.get_by_role('link', name='Change your email address').click()
    camera.shoot(page, 'change-email')
    page.get_by_label('New email address').fill(new)
    page.get_by_label('Current password').fill(PASSWORD)
    page.get_by_role('button', name='Send a confirmation link').click()
    page.wait_for_url('**/settings')
    expect(page.get_by_text('Waiting for you to open the link sent to')).to_be_visible()
    camera.shoot(page, 'settings-waiting')
    notice = email_to(mail_server, old, '[Microblog] A change of your email address')
    shoot_email(browser, camera, notice.part('text/html'), 'change-notice-email')
    confirm = email_to(mail_server, new, '[Microblog] Confirm your new email address')
    shoot_email(browser, camera, confirm.part('text/html'), 'confirm-new-email')

    page.goto(link_in(confirm, '/confirm_new_email/'))
    camera.shoot(page, 'confirm-new-page')
    page.get_by_role('button', name=f'Use {new}').click()
    page.wait_for_url('**/settings')
    expect(page.get_by_text(f'Your email address is now {new}.')).to_be_visible()
    wait_for_email(mail_server, old, 'was changed from')  # the second notice: it is made

    page.get_by_role('link', name='Change your password').click()
    camera.shoot(page, 'change-password')
    page.get_by_label('Current password').fill(PASSWORD)
    page.get_by_label('New password', exact=True).fill(NEW_PASSWORD)
    page.get_by_label('Repeat new password').fill(NEW_PASSWORD)
    page.get_by_role('button', name='Change password').click()
    page.wait_for_url('**/settings')
    expect(page.get_by_text('Your password has been changed.')).to_be_visible()
    camera.shoot(page, 'password-changed')
    changed = email_to(mail_server, new, '[Microblog] Your password was changed')
    shoot_email(browser, camera, changed.part('text/html'), 'password-changed-email')
    logout(page)

    # Forgotten: the reset goes to the confirmed, new address, and only there.
    page.goto('/reset_password_request')
    page.get_by_label('Email').fill(old)
    page.get_by_role('button', name='Request Password Reset').click()
    page.wait_for_url('**/login')
    page.goto('/reset_password_request')
    page.get_by_label('Email').fill(new)
    page.get_by_role('button', name='Request Password Reset').click()
    email_to(mail_server, new, '[Microblog] Reset Your Password')
    # Both requests were stored before the pages returned, and the worker takes them in order.
    assert not [
        received
        for received in mail_server.messages
        if old in received.rcpt_tos
        and received.message['Subject'] == '[Microblog] Reset Your Password'
    ]


def test_undo_from_the_old_address(browser, page, camera, mail_server, live_server):
    """Someone who knows the password moves the account; the owner takes it back."""
    username = unique('gus')
    old, thief = f'{username}@example.com', f'{username}-thief@example.com'
    register(page, camera, username, email=old)
    welcome = email_to(mail_server, old, '[Microblog] Confirm your email address')
    page.goto(link_in(welcome, '/confirm_email/'))
    page.get_by_role('button', name='Confirm my address').click()
    page.wait_for_url('**/login')
    login(page, username)
    page.wait_for_url('**/index')
    page.goto('/settings/email')
    page.get_by_label('New email address').fill(thief)
    page.get_by_label('Current password').fill(PASSWORD)
    page.get_by_role('button', name='Send a confirmation link').click()
    page.wait_for_url('**/settings')
    confirm = email_to(mail_server, thief, '[Microblog] Confirm your new email address')
    page.goto(link_in(confirm, '/confirm_new_email/'))
    page.get_by_role('button', name=f'Use {thief}').click()
    page.wait_for_url('**/settings')

    notice = email_to(mail_server, old, '[Microblog] A change of your email address')
    made = wait_for_email(mail_server, old, 'was changed from')
    shoot_email(browser, camera, made.part('text/html'), 'change-made-email')
    owner = browser.new_context(base_url=live_server, viewport={'width': 1000, 'height': 700})
    owner_page = owner.new_page()
    try:
        owner_page.goto(link_in(notice, '/undo_email_change/'))
        camera.shoot(owner_page, 'undo-page')
        owner_page.get_by_role('button', name=f'Put back {old}').click()
        owner_page.wait_for_url('**/reset_password')
        expect(owner_page.get_by_text(f'Your email address is {old} again')).to_be_visible()
        camera.shoot(owner_page, 'undo-then-new-password')
        owner_page.get_by_label('Password', exact=True).fill(NEW_PASSWORD)
        owner_page.get_by_label('Repeat Password').fill(NEW_PASSWORD)
        owner_page.get_by_role('button', name='Set New Password').click()
        owner_page.wait_for_url('**/login')
    finally:
        owner.close()
    # The thief's session ended with the undo.
    page.goto('/settings')
    page.wait_for_url('**/login?next=%2Fsettings')


def test_a_taken_address_and_a_link_for_someone_else(browser, page, camera, mail_server):
    """Registering with a taken address reads like any registration; the owner is told."""
    owner = unique('hal')
    register(page, camera, owner)
    welcome = email_to(
        mail_server, f'{owner}@example.com', '[Microblog] Confirm your email address'
    )
    register(page, camera, unique('ivy'), email=f'{owner}@example.com')
    assert page.locator('.flash').inner_text().startswith('Check your email: we sent a message to')
    told = email_to(mail_server, f'{owner}@example.com', '[Microblog] You already have an account')
    shoot_email(browser, camera, told.part('text/html'), 'already-registered-email')

    # Someone else, signed in, opens the owner's confirmation link: nothing happens.
    other = unique('jon')
    register(page, camera, other)
    login(page, other)
    page.wait_for_url('**/index')
    response = page.goto(link_in(welcome, '/confirm_email/'))
    assert response.status == 403
    expect(page.get_by_role('heading', name='This link is for another account')).to_be_visible()
    camera.shoot(page, 'link-for-another-account')
