"""Microblog in Chinese and English in headless Chromium: pages, the switch, the reset email.

Screenshots land in test-artifacts/screenshots/; CJK text needs a CJK font on the
machine (Debian: fonts-noto-cjk, which .ci/run installs), checked here by drawing.
"""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.test_journeys import NEW_PASSWORD, email_to, shoot_email, unique
from tests.helpers import PASSWORD

# Whether two different Chinese characters draw differently in the page's own font: a
# missing font draws both as the same empty box ("tofu").
DRAWS_CJK = """() => {
    const font = getComputedStyle(document.body).font;
    const draw = (text) => {
        const canvas = document.createElement('canvas');
        canvas.width = 64; canvas.height = 64;
        const context = canvas.getContext('2d');
        context.font = font.replace(/\\d+(\\.\\d+)?px/, '40px');
        context.fillText(text, 4, 48);
        return Array.from(context.getImageData(0, 0, 64, 64).data).join(',');
    };
    const blank = draw('');
    return draw('登') !== draw('录') && draw('登') !== blank;
}"""


@pytest.fixture(params=[1280, 390], ids=lambda width: f'{width}px')
def chinese_page(request, browser, live_server):
    """A browser whose first language is Chinese (Accept-Language: zh-CN), desktop or phone."""
    context = browser.new_context(
        base_url=live_server, locale='zh-CN', viewport={'width': request.param, 'height': 800}
    )
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def register_in_chinese(page, camera, username):
    page.goto('/register')
    camera.shoot(page, 'register')
    page.get_by_label('用户名').fill(username)
    page.get_by_label('邮箱地址').fill(f'{username}@example.com')
    page.get_by_label('密码', exact=True).fill(PASSWORD)
    page.get_by_label('再次输入密码').fill(PASSWORD)
    page.get_by_role('button', name='注册').click()
    page.wait_for_url('**/login')


def login_in_chinese(page, username, password=PASSWORD):
    page.goto('/login')
    page.get_by_label('用户名').fill(username)
    page.get_by_label('密码').fill(password)
    page.get_by_role('button', name='登录').click()


def test_a_chinese_reader_sees_chinese_and_forgets_the_password(
    browser, chinese_page, camera, mail_server, live_server
):
    page = chinese_page
    page.goto('/login')
    assert page.locator('html').get_attribute('lang') == 'zh-CN'
    expect(page.get_by_role('heading', name='登录')).to_be_visible()
    assert page.evaluate(DRAWS_CJK), 'Chinese characters draw as boxes: install fonts-noto-cjk'
    assert page.title() == '登录 - Microblog'
    camera.shoot(page, 'login')

    username = unique('li')
    register_in_chinese(page, camera, username)
    assert page.locator('.flash').inner_text().startswith('请查收邮件：我们已向')
    login_in_chinese(page, username)
    page.wait_for_url('**/index')
    page.get_by_label('说点什么').fill('大家好，这是我的第一条帖子。')
    page.get_by_role('button', name='提交').click()
    expect(page.get_by_text('您的帖子已发布！')).to_be_visible()
    # The script says how long ago, in the page's language.
    page.wait_for_function("() => !document.querySelector('time').textContent.includes('UTC')")
    assert page.locator('time').first.inner_text() == '刚刚'
    camera.shoot(page, 'index')
    page.get_by_role('link', name='个人主页').click()
    expect(page.get_by_text('0 位关注者，关注了 0 人。')).to_be_visible()
    camera.shoot(page, 'profile')
    page.get_by_role('button', name='退出登录').click()
    page.wait_for_url('**/login')
    expect(page.get_by_text('您已退出登录。')).to_be_visible()

    # Forgot the password: the email is in Chinese, and its link works.
    page.get_by_role('link', name='点此重置').click()
    page.wait_for_url('**/reset_password_request')
    camera.shoot(page, 'reset-request')
    page.get_by_label('邮箱地址').fill(f'{username}@example.com')
    page.get_by_role('button', name='发送重置密码邮件').click()
    page.wait_for_url('**/login')
    expect(page.get_by_text('请查收邮件，按邮件中的说明重置密码')).to_be_visible()
    email = email_to(mail_server, f'{username}@example.com', '[Microblog] 重置您的密码')
    text = email.part('text/plain')
    assert f'{username}，您好：' in text
    assert '此链接只能使用一次，有效期为 10 分钟。' in text
    html = email.part('text/html')
    assert '<html lang="zh-CN">' in html
    shoot_email(browser, camera, html, 'reset-email')
    link = re.search(r'http://\S+/reset_password/\S+', text)[0]
    assert link.startswith(live_server)
    page.goto(link)
    page.wait_for_url('**/reset_password')
    expect(page.get_by_role('heading', name='重置您的密码')).to_be_visible()
    camera.shoot(page, 'reset-form')
    page.get_by_label('密码', exact=True).fill(NEW_PASSWORD)
    page.get_by_label('再次输入密码').fill(NEW_PASSWORD)
    page.get_by_role('button', name='设置新密码').click()
    page.wait_for_url('**/login')
    expect(page.get_by_text('您的密码已重置。')).to_be_visible()
    login_in_chinese(page, username, NEW_PASSWORD)
    page.wait_for_url('**/index')
    notice = email_to(mail_server, f'{username}@example.com', '[Microblog] 您的密码已更改')
    shoot_email(browser, camera, notice.part('text/html'), 'password-changed-email')


@pytest.mark.parametrize('scripts', [True, False], ids=['scripts', 'no-scripts'])
def test_switching_language_is_one_click(browser, live_server, camera, scripts):
    context = browser.new_context(
        base_url=live_server,
        locale='zh-CN',
        java_script_enabled=scripts,
        viewport={'width': 1280, 'height': 800},
    )
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.goto('/reset_password_request')
    expect(page.get_by_role('heading', name='重置密码')).to_be_visible()
    camera.shoot(page, 'chinese')
    page.get_by_role('button', name='English').click()
    page.wait_for_url('**/reset_password_request')
    assert page.locator('html').get_attribute('lang') == 'en'
    expect(page.get_by_role('heading', name='Reset Password')).to_be_visible()
    camera.shoot(page, 'english')
    # The choice stays with this browser, page after page.
    page.goto('/login')
    expect(page.get_by_role('heading', name='Sign In')).to_be_visible()
    page.get_by_role('button', name='简体中文').click()
    page.wait_for_url('**/login')
    expect(page.get_by_role('heading', name='登录')).to_be_visible()
    context.close()


def test_a_signed_in_choice_follows_the_account(browser, live_server, camera):
    english = browser.new_context(base_url=live_server, locale='en-US')
    page = english.new_page()
    page.set_default_timeout(10_000)
    username = unique('wei')
    page.goto('/register')
    page.get_by_label('Username').fill(username)
    page.get_by_label('Email').fill(f'{username}@example.com')
    page.get_by_label('Password', exact=True).fill(PASSWORD)
    page.get_by_label('Repeat Password').fill(PASSWORD)
    page.get_by_role('button', name='Register').click()
    page.wait_for_url('**/login')
    page.get_by_label('Username').fill(username)
    page.get_by_label('Password').fill(PASSWORD)
    page.get_by_role('button', name='Sign In').click()
    page.wait_for_url('**/index')
    page.get_by_role('button', name='简体中文').click()
    page.wait_for_url('**/index')
    expect(page.get_by_role('heading', name=f'{username}，您好！')).to_be_visible()
    camera.shoot(page, 'index-chinese')
    english.close()
    # Another English browser: once signed in, the account's language.
    other = browser.new_context(base_url=live_server, locale='en-US').new_page()
    other.goto('/login')
    expect(other.get_by_role('heading', name='Sign In')).to_be_visible()
    other.get_by_label('Username').fill(username)
    other.get_by_label('Password').fill(PASSWORD)
    other.get_by_role('button', name='Sign In').click()
    other.wait_for_url('**/index')
    assert other.locator('html').get_attribute('lang') == 'zh-CN'
    other.context.close()
