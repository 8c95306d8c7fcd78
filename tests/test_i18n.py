"""Microblog in Simplified Chinese and English: every string, page and email.

The catalogue tests are strict on purpose: a string shown to users that is not marked
for translation, not in the zh_CN catalogue, or not translated there fails the suite,
and so does a compiled catalogue older than its .po. Fix with the README's workflow
(`flask translate update`, translate, `flask translate compile`).
"""

import ast
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
import zxcvbn.feedback
from babel.dates import format_date, format_time
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from flask import render_template
from flask_babel import force_locale, get_locale

from app import db
from app.cli import KEYWORDS
from app.i18n import LANGUAGES, browser_locale, current_locale, format_moment
from app.models import User
from app.security import ZXCVBN_FEEDBACK
from tests.helpers import PASSWORD, links_in, sign_in_as

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / 'app'
TEMPLATES = APP / 'templates'
PO = APP / 'translations' / 'zh' / 'LC_MESSAGES' / 'messages.po'
MO = PO.with_suffix('.mo')
CHINESE = {'Accept-Language': 'zh-CN,zh;q=0.9,en;q=0.8'}
ENGLISH = {'Accept-Language': 'en-US,en;q=0.9'}
NEW_PASSWORD = 'quiet-Meadow-lantern-42'

# Shown to operators and developers only, in English like the logs and the terminal:
# the admins' error reports, `flask mail test`, and the debug-only inbox of the sink.
ENGLISH_ONLY_TEMPLATES = {
    'email/error_report.txt',
    'email/error_report.html',
    'email/test.txt',
    'email/test.html',
}
ENGLISH_ONLY_FOLDERS = ('devmail/',)
ENGLISH_ONLY_MODULES = {'logs.py', 'seed.py', 'cli.py', 'mail/cli.py', 'mail/sink.py'}
ENGLISH_ONLY_PACKAGES = ('devmail/',)
# Words a Chinese page may hold: names, and technical terms kept in Latin letters.
LATIN_WORDS = {'Microblog', 'UTC', 'English', 'CSRF', 'Cookie', 'HTTPS', 'http', 'https', 'IP'}
# zxcvbn's examples, quoted as they are in its advice.
LATIN_WORDS |= {'aaa', 'abc', 'abcabcabc'}


def catalogue():
    with PO.open('rb') as file:
        return read_po(file)


def extracted_messages():
    """Every string marked in the code and templates, as `flask translate update` finds them."""
    method_map = [
        ('app/**.py', 'python'),
        ('app/templates/**.html', 'jinja2'),
        ('app/templates/**.txt', 'jinja2'),
    ]
    keywords = {
        '_': None,
        'gettext': None,
        'ngettext': (1, 2),
        'lazy_gettext': None,
        '_l': None,
        'lazy_ngettext': (1, 2),
        '_n': (1, 2),
        'N_': None,  # marked, translated where shown (pybabel extracts it by default)
    }
    assert {keyword.split(':')[0] for keyword in KEYWORDS} <= set(keywords)
    found = {}
    for filename, _lineno, message, _comments, _context in extract_from_dir(
        str(ROOT), method_map, keywords=keywords
    ):
        found.setdefault(message, filename)
    return found


def test_babel_cfg_is_what_the_tests_extract():
    config = (ROOT / 'babel.cfg').read_text()
    assert re.findall(r'^\[(\w+): ([^\]]+)\]', config, re.M) == [
        ('python', 'app/**.py'),
        ('jinja2', 'app/templates/**.html'),
        ('jinja2', 'app/templates/**.txt'),
    ]


def test_every_marked_string_is_in_the_catalogue_and_translated():
    catalog = catalogue()
    problems = []
    for message_id, filename in extracted_messages().items():
        message = catalog.get(message_id[0] if isinstance(message_id, tuple) else message_id)
        if message is None:
            problems.append(f'{filename}: not in the catalogue: {message_id!r}')
            continue
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        if not all(strings):
            problems.append(f'{filename}: not translated: {message_id!r}')
        if message.fuzzy:
            problems.append(f'{filename}: fuzzy (check and remove the flag): {message_id!r}')
    assert not problems, (
        'Run `flask translate update`, translate in messages.po, then `flask translate '
        'compile`:\n' + '\n'.join(problems)
    )


def test_translations_keep_every_placeholder():
    problems = []
    for message in catalogue():
        if not message.id:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        wanted = set(re.findall(r'%\(\w+\)[sd]', ids[-1]))
        for string in strings:
            if set(re.findall(r'%\(\w+\)[sd]', string)) != wanted:
                problems.append(f'{message.id!r} -> {string!r}')
        tags = sorted(re.findall(r'</?\w+', ids[0]))
        if any(sorted(re.findall(r'</?\w+', string)) != tags for string in strings):
            problems.append(f'HTML tags differ: {message.id!r} -> {strings!r}')
    assert not problems, '\n'.join(problems)


def test_the_catalogue_has_no_leftover_entries():
    """Strings no longer in the code leave the catalogue (update runs with --ignore-obsolete)."""
    marked = {m[0] if isinstance(m, tuple) else m for m in extracted_messages()}
    leftovers = [
        message.id
        for message in catalogue()
        if message.id
        and ((message.id[0] if isinstance(message.id, tuple) else message.id) not in marked)
    ]
    assert leftovers == []


def test_the_compiled_catalogue_is_current():
    with MO.open('rb') as file:
        compiled = read_mo(file)
    source = catalogue()

    def pairs(catalog):
        return {
            (message.id if isinstance(message.id, str) else tuple(message.id)): (
                message.string if isinstance(message.string, str) else tuple(message.string)
            )
            for message in catalog
            if message.id and not message.fuzzy
        }

    assert pairs(compiled) == pairs(source), 'Run `flask translate compile` and commit the .mo'


def test_the_glossary_heads_the_catalogue():
    head = PO.read_text(encoding='utf-8').split('msgid', 1)[0]
    for term in ('帖子', '关注', '重置密码', '登录', '账号', '邮箱地址', '您'):
        assert term in head


def template_names():
    for path in sorted(TEMPLATES.rglob('*')):
        name = path.relative_to(TEMPLATES).as_posix()
        if path.suffix in ('.html', '.txt') and name not in ENGLISH_ONLY_TEMPLATES:
            if not name.startswith(ENGLISH_ONLY_FOLDERS):
                yield name


def unmarked_template_text(env, source):
    """Words a template writes outside {% trans %} and _(), and capitalised string literals."""
    found = []
    text = []  # the template's own text, each tag and expression left as a space
    in_trans = False
    calls = []  # the names of the calls the lexer is inside, innermost last
    previous = []
    for _lineno, kind, value in env.lex(source):
        if kind == 'name' and previous[-1:] == [('block_begin', '{%')]:
            if value == 'trans':
                in_trans = True
            elif value == 'endtrans':
                in_trans = False
        if kind == 'operator' and value == '(':
            name = previous[-1][1] if previous and previous[-1][0] == 'name' else None
            calls.append(name)
        elif kind == 'operator' and value == ')' and calls:
            calls.pop()
        if kind == 'data':
            text.append(' ' if in_trans else value)
        elif kind in ('variable_begin', 'block_begin'):
            text.append(' ')
        literal = value[1:-1] if kind == 'string' else ''  # the lexer keeps the quotes
        if re.match(r'[A-Z][a-z]+\b', literal) and literal != 'BooleanField':
            if not calls or calls[-1] not in ('_', 'gettext', 'ngettext'):
                found.append(value)
        if kind != 'whitespace':
            previous.append((kind, value))
    visible = re.sub(r'<[^>]*>', ' ', ''.join(text))
    visible = re.sub(r'&\w+;', ' ', visible)
    words = [w for w in re.findall(r"[A-Za-z][A-Za-z']+", visible) if w not in LATIN_WORDS]
    if words:
        found.insert(0, ' '.join(words))
    return found


@pytest.mark.parametrize('name', list(template_names()))
def test_templates_mark_every_word_they_show(app, name):
    source = (TEMPLATES / name).read_text()
    assert unmarked_template_text(app.jinja_env, source) == [], (
        f'{name}: wrap these in _() or {{% trans %}}'
    )


def test_the_template_check_finds_unmarked_words(app):
    env = app.jinja_env
    assert unmarked_template_text(env, '<p>Hello there</p>') == ['Hello there']
    assert unmarked_template_text(env, "{{ form.submit(value='Follow') }}") == ["'Follow'"]
    assert unmarked_template_text(env, "<p>{{ _('Hello') }}</p>") == []
    assert unmarked_template_text(env, '<p>{% trans %}Hello {{ x }}{% endtrans %}</p>') == []


# Calls whose string arguments are shown to users: flash messages, form errors,
# labels, page titles, abort descriptions.
SHOWN_ARGUMENTS = {
    'flash': [0],
    'ValidationError': [0],
    'append': [0],
    'StringField': [0],
    'PasswordField': [0],
    'BooleanField': [0],
    'SubmitField': [0],
    'TextAreaField': [0],
    'HiddenField': [0],
    'SelectField': [0],
    'EmailField': [0],
    'RadioField': [0],
}
SHOWN_KEYWORDS = {'title', 'description', 'message', 'label', 'subject'}


def python_modules():
    for path in sorted(APP.rglob('*.py')):
        name = path.relative_to(APP).as_posix()
        if name not in ENGLISH_ONLY_MODULES and not name.startswith(ENGLISH_ONLY_PACKAGES):
            yield name


def unmarked_python_strings(source):
    """String literals handed, unmarked, to something that shows them to users."""
    found = []

    def literal(node):
        return (isinstance(node, ast.Constant) and isinstance(node.value, str)) or isinstance(
            node, ast.JoinedStr
        )

    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        name = function.attr if isinstance(function, ast.Attribute) else getattr(function, 'id', '')
        for index in SHOWN_ARGUMENTS.get(name, []):
            if len(node.args) > index and literal(node.args[index]):
                found.append(f'line {node.lineno}: {name}({ast.unparse(node.args[index])})')
        for keyword in node.keywords:
            if keyword.arg in SHOWN_KEYWORDS and literal(keyword.value):
                found.append(f'line {node.lineno}: {keyword.arg}={ast.unparse(keyword.value)}')
        if name == 'IfExp':
            continue
    for node in ast.walk(ast.parse(source)):
        # flash('a' if x else 'b'), and constants such as INVALID_LINK = '...' flashed later.
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name) and target.id.endswith(('_MESSAGE', '_LINK')):
                if literal(node.value):
                    found.append(f'line {node.lineno}: {target.id} = {ast.unparse(node.value)}')
    return found


@pytest.mark.parametrize('name', list(python_modules()))
def test_python_code_marks_every_string_it_shows(name):
    assert unmarked_python_strings((APP / name).read_text()) == [], (
        f'app/{name}: wrap these in _() (gettext) or _l() (lazy_gettext)'
    )


def test_the_python_check_finds_unmarked_strings():
    assert unmarked_python_strings("flash('Hi', 'info')") == ["line 1: flash('Hi')"]
    assert unmarked_python_strings("flash(f'Hi {name}')") == ["line 1: flash(f'Hi {name}')"]
    assert unmarked_python_strings("x = StringField('Name')") == ["line 1: StringField('Name')"]
    assert unmarked_python_strings("render_template('a.html', title='Home')") == [
        "line 1: title='Home'"
    ]
    assert unmarked_python_strings("flash(_('Hi'), 'info')") == []
    assert unmarked_python_strings("x = StringField(_l('Name'))") == []


def test_every_zxcvbn_message_has_a_translation():
    """zxcvbn's feedback is English: each message it can give is in ZXCVBN_FEEDBACK."""
    tree = ast.parse(Path(zxcvbn.feedback.__file__).read_text())
    messages = {
        ''.join(part.value for part in ast.walk(node.args[0]) if isinstance(part, ast.Constant))
        if isinstance(node.args[0], ast.JoinedStr)
        else node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == '_'
    }
    assert messages and messages == set(ZXCVBN_FEEDBACK)


# Choosing the language


@pytest.mark.parametrize(
    ('header', 'locale'),
    [
        ('zh-CN,zh;q=0.9,en;q=0.8', 'zh_CN'),
        ('zh', 'zh_CN'),
        ('zh-Hans', 'zh_CN'),
        # Traditional Chinese: Simplified reads far better than English (see app/i18n.py).
        ('zh-TW,zh;q=0.9', 'zh_CN'),
        ('zh-Hant-HK', 'zh_CN'),
        ('en-US,en;q=0.9,zh-CN;q=0.8', 'en'),
        ('fr-FR,fr;q=0.9,zh-CN;q=0.5', 'zh_CN'),
        ('de-DE', None),
        ('zh-CN;q=0, en', 'en'),
        ('', None),
    ],
)
def test_the_browser_language(app, header, locale):
    with app.test_request_context(headers={'Accept-Language': header} if header else {}):
        assert browser_locale() == locale


@pytest.mark.parametrize(
    ('headers', 'lang', 'heading'),
    [
        (CHINESE, 'zh-CN', '<h1>登录</h1>'),
        ({'Accept-Language': 'zh-TW'}, 'zh-CN', '<h1>登录</h1>'),
        (ENGLISH, 'en', '<h1>Sign In</h1>'),
        ({'Accept-Language': 'fr'}, 'en', '<h1>Sign In</h1>'),
        ({}, 'en', '<h1>Sign In</h1>'),
    ],
)
def test_a_visitor_gets_the_browser_language(client, headers, lang, heading):
    response = client.get('/login', headers=headers)
    assert f'<html lang="{lang}">' in response.text
    assert heading in response.text
    assert 'Accept-Language' in response.headers['Vary']


def switch(client, locale, next_page='/login', **kwargs):
    return client.post('/language', data={'locale': locale, 'next': next_page}, **kwargs)


def test_a_visitor_switches_language_in_one_click(client):
    page = client.get('/login', headers=CHINESE).text
    # The footer offers the other language as a button of a POST form.
    assert re.search(r'<button type="submit"[^>]*name="locale" value="en" lang="en"', page)
    assert '<form class="language-switch" action="/language" method="post">' in page
    response = switch(client, 'en', '/login?next=%2Fexplore', headers=CHINESE)
    assert response.status_code == 302
    assert response.headers['Location'] == '/login?next=%2Fexplore'
    assert '<h1>Sign In</h1>' in client.get('/login', headers=CHINESE).text
    switch(client, 'zh_CN', headers=ENGLISH)
    assert '<h1>登录</h1>' in client.get('/login', headers=ENGLISH).text


@pytest.mark.parametrize('target', ['https://evil.example.com/', '//evil.example.com', '', None])
def test_the_switch_never_sends_elsewhere(client, target):
    data = {'locale': 'zh_CN'} | ({'next': target} if target is not None else {})
    response = client.post('/language', data=data)
    assert response.headers['Location'] == '/index'


def test_the_switch_refuses_an_unknown_language(client):
    switch(client, 'xx')
    assert '<html lang="en">' in client.get('/login').text


def test_the_switch_needs_a_csrf_token(make_app):
    app = make_app(WTF_CSRF_ENABLED=True)
    client = app.test_client()
    response = switch(client, 'zh_CN')
    assert response.status_code == 400
    assert '<html lang="en">' in client.get('/login').text
    page = client.get('/login').text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)[1]
    client.post(
        '/language',
        data={'locale': 'zh_CN', 'next': '/login', 'csrf_token': token},
        headers={'Referer': 'https://microblog.example.com/login'},
    )
    assert '<html lang="zh-CN">' in client.get('/login').text


def test_a_signed_in_choice_is_saved_on_the_account(app, make_user, auth):
    susan = make_user('susan')
    first = app.test_client()
    signer = type(auth)
    signer(first).login('susan')
    switch(first, 'zh_CN', '/index')
    assert db.session.scalar(sa.select(User.locale).where(User.id == susan.id)) == 'zh_CN'
    # Another browser, which prefers English, shows the account's choice once signed in.
    other = app.test_client()
    assert '<html lang="en">' in other.get('/login', headers=ENGLISH).text
    signer(other).login('susan', headers=ENGLISH)
    page = other.get('/index', headers=ENGLISH).text
    assert '<html lang="zh-CN">' in page
    assert '您好' in page
    # And the page after logging out is still in it.
    other.post('/logout', headers=ENGLISH)
    assert '<h1>登录</h1>' in other.get('/login', headers=ENGLISH).text


def test_registration_keeps_the_language_of_the_page(client):
    client.post(
        '/register',
        headers=CHINESE,
        data={
            'username': 'li',
            'email': 'li@example.com',
            'password': PASSWORD,
            'password2': PASSWORD,
        },
    )
    assert db.session.scalar(sa.select(User.locale).where(User.username == 'li')) == 'zh_CN'
    assert (
        '请查收邮件：我们已向 li@example.com 发送了一封邮件。'
        in client.get('/login', headers=CHINESE).text
    )


def test_an_account_without_a_language_takes_that_of_its_first_login(client, make_user, auth):
    susan = make_user('susan')
    assert susan.locale is None
    auth.login('susan', headers={'Accept-Language': 'zh-TW'})
    assert db.session.scalar(sa.select(User.locale).where(User.id == susan.id)) == 'zh_CN'


# What a Chinese reader sees


def latin_words(html, allowed=()):
    """The words in Latin letters a page shows, but for names and allowed terms."""
    html = re.sub(r'<(script|style)\b.*?</\1>', ' ', html, flags=re.S)
    visible = re.sub(r'<[^>]*>', ' ', html)
    visible = re.sub(r'&\w+;|&#\d+;', ' ', visible)
    visible = re.sub(r'[^\s()]+@[^\s()]+', ' ', visible)  # email addresses are the user's data
    # Values of buttons and placeholders are shown too.
    visible += ' ' + ' '.join(re.findall(r'<input[^>]*type="submit"[^>]*value="([^"]*)"', html))
    words = set(re.findall(r'[A-Za-z][A-Za-z\']+', visible))
    return sorted(words - LATIN_WORDS - set(allowed))


def get_pages(app):
    """The site's pages that a GET with no argument shows (new pages are found here too)."""
    skip = {'static', 'main.avatar', 'i18n.set_language'}
    for rule in app.url_map.iter_rules():
        if rule.endpoint in skip or rule.endpoint.startswith('devmail.'):
            continue
        if 'GET' in rule.methods and not rule.arguments:
            yield rule.rule


def test_every_page_is_in_chinese(app, client, make_user, auth):
    susan = make_user('susan')
    john = make_user('john')
    john.follow(susan)
    db.session.commit()
    names = ['susan', 'john']
    anonymous = app.test_client()
    for path in list(get_pages(app)) + ['/no-such-page', '/reset_password/not-a-token']:
        response = anonymous.get(path, headers=CHINESE, follow_redirects=True)
        assert latin_words(response.text, names) == [], path
    auth.login('susan', headers=CHINESE)
    client.post('/index', data={'post': 'hello'}, headers=CHINESE)
    seen = 0
    for path in [*get_pages(app), '/user/susan', '/user/john', '/no-such-page']:
        response = client.get(path, headers=CHINESE, follow_redirects=True)
        assert '<html lang="zh-CN">' in response.text, path
        assert latin_words(response.text, [*names, 'hello']) == [], path
        seen += 1
    assert seen >= 8


@pytest.mark.parametrize(
    ('path', 'data'),
    [
        ('/register', {}),
        ('/register', {'username': 'bad name!', 'email': 'nope', 'password': 'abc'}),
        ('/register', {'username': 'susan', 'email': 'susan@example.com', 'password': 'x' * 8}),
        ('/register', {'username': 'li', 'email': 'li@example', 'password': 'qwertyuiop'}),
        ('/register', {'username': 'li', 'email': 'Émile@example.com', 'password': 'password1'}),
        ('/register', {'email': 'a b@example.com', 'password': 'aaaaaaaaaaaa', 'password2': 'b'}),
        ('/register', {'email': '@example.com', 'password': 'Susan2026', 'username': 'x' * 70}),
        ('/login', {}),
        ('/login', {'username': 'susan', 'password': 'wrong'}),
        ('/reset_password_request', {'email': 'not-an-email'}),
    ],
)
def test_form_errors_are_in_chinese(client, make_user, path, data):
    make_user('susan')
    response = client.post(path, data=data, headers=CHINESE, follow_redirects=True)
    assert 'class="error"' in response.text or 'flash-error' in response.text
    assert latin_words(response.text, ['susan']) == []
    assert '字段' not in response.text  # WTForms' own Chinese; these pages never say it


@pytest.mark.parametrize(
    ('path', 'data', 'message'),
    [
        ('/login', {'username': ' ', 'password': 'x'}, '请填写此项。'),
        ('/login', {'username': 'x' * 65, 'password': 'x'}, '最多只能输入 64 个字符。'),
        ('/index', {'post': 'x' * 141}, '请输入 1 到 140 个字符。'),
        (
            '/edit_profile',
            {'username': 'susan', 'about_me': 'x' * 141},
            '最多只能输入 140 个字符。',
        ),
    ],
)
def test_the_common_form_checks_speak_the_sites_chinese(
    client, make_user, auth, path, data, message
):
    make_user('susan')
    if path != '/login':
        auth.login('susan')
    switch(client, 'zh_CN')
    response = client.post(path, data=data, headers=CHINESE)
    assert message in response.text
    assert '字段' not in response.text


def test_password_advice_is_in_chinese(client):
    data = {'username': 'li', 'email': 'li@example.com', 'password': 'abcabcabc'}
    page = client.post('/register', data=data, headers=CHINESE).text
    assert '像“abcabcabc”这样的重复只比“abc”稍难猜一点。' in page


def test_sentences_run_together_in_chinese_and_are_spaced_in_english(app, make_user):
    """Two sentences shown as one message: no space after a Chinese full stop."""
    weak = {'current_password': PASSWORD, 'password': 'password', 'password2': 'password'}
    good = {'current_password': PASSWORD, 'password': NEW_PASSWORD, 'password2': NEW_PASSWORD}
    texts = {}
    for name, locale in (('li', 'zh_CN'), ('susan', 'en')):
        user = make_user(name)
        user.locale = locale
        db.session.commit()
        browser = sign_in_as(app.test_client(), user)
        sign_in_as(app.test_client(), user)  # another session, signed out by the change
        advice = browser.post('/settings/password', data=weak).text
        changed = browser.post('/settings/password', data=good, follow_redirects=True).text
        texts[locale] = advice, changed
    advice, changed = texts['zh_CN']
    assert '这是最常用的 10 个密码之一。再加一两个单词' in advice
    assert '您的密码已更改。已退出其他 1 个会话。' in changed
    advice, changed = texts['en']
    assert 'This is a top-10 common password. Add another word or two.' in advice
    assert 'Your password has been changed. 1 other session was signed out.' in changed


def test_error_pages_are_in_chinese(make_app):
    app = make_app(WTF_CSRF_ENABLED=True, MAX_CONTENT_LENGTH=100)
    client = app.test_client()
    missing = client.post('/login', data={'username': 'x'}, headers=CHINESE)
    assert missing.status_code == 400
    assert '缺少 CSRF 令牌。' in missing.text
    assert latin_words(missing.text) == []
    large = client.post('/login', data={'username': 'x' * 200}, headers=CHINESE)
    assert large.status_code == 413
    assert latin_words(large.text) == []
    wrong_method = client.delete('/login', headers=CHINESE)
    assert wrong_method.status_code == 405
    assert latin_words(wrong_method.text) == []


def test_the_429_page_is_in_chinese(make_app):
    app = make_app(RATELIMIT_ENABLED=True, RATELIMIT_LOGIN_PER_ADDRESS='1 per hour')
    client = app.test_client()
    for _ in range(2):
        response = client.post('/login', data={'username': 'x', 'password': 'y'}, headers=CHINESE)
    assert response.status_code == 429
    assert re.search(r'请等待 1 小时后再试。', response.text)
    assert latin_words(response.text) == []


@pytest.mark.parametrize(
    ('followers', 'english', 'chinese'),
    [
        (1, '1 follower, 0 following.', '1 位关注者，关注了 0 人。'),
        (2, '2 followers, 0 following.', '2 位关注者，关注了 0 人。'),
    ],
)
def test_counts_follow_plural_rules(client, make_user, auth, followers, english, chinese):
    susan = make_user('susan')
    for index in range(followers):
        make_user(f'fan{index}').follow(susan)
    db.session.commit()
    auth.login('fan0')
    assert english in client.get('/user/susan').text
    switch(client, 'zh_CN')
    assert chinese in client.get('/user/susan').text


def test_dates_are_in_the_readers_language(client, make_user, auth):
    make_user('susan')
    auth.login('susan', headers=CHINESE)
    client.post('/index', data={'post': 'hello'})
    page = client.get('/explore').text
    shown = re.search(r'<time datetime="[^"]+" data-relative>([^<]+)</time>', page)[1]
    assert re.fullmatch(r'\d{4}年\d{1,2}月\d{1,2}日 \d\d:\d\d UTC', shown)


def babel_moment(moment, locale):
    """A date and time as Babel formats them on each call: what format_moment must show."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    date = format_date(moment, 'medium', locale=locale)
    time = format_time(moment, 'short', tzinfo=UTC, locale=locale)
    return locale.datetime_formats['medium'].format(time, date) + ' UTC'


EASTERN = timezone(timedelta(hours=-5))
MOMENTS = [
    datetime(2026, 11, 25, 4, 5, 59, tzinfo=UTC),
    datetime(2026, 11, 25, 4, 5, 1, 999, tzinfo=UTC),  # same minute, other seconds
    datetime(2026, 11, 25, 4, 6, tzinfo=UTC),
    datetime(2026, 11, 25, 16, 5, tzinfo=UTC),  # same minute of the afternoon
    datetime(2026, 11, 26, 4, 5, tzinfo=UTC),  # same minute, next day
    datetime(2026, 11, 25, 0, 0, tzinfo=UTC),
    datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC),
    datetime(2027, 1, 1, 12, 0),  # naive: read as UTC
    datetime(2026, 11, 25, 23, 30, tzinfo=EASTERN),  # its own date, the time in UTC
]


@pytest.mark.parametrize('locale', list(LANGUAGES))
def test_dates_read_as_babel_formats_them(app, locale):
    with app.test_request_context('/'), force_locale(locale):
        for _ in range(2):  # formatted, then kept
            for moment in MOMENTS:
                assert format_moment(moment) == babel_moment(moment, get_locale()), moment


# Email in the recipient's language


def request_reset(client, address, headers):
    return client.post('/reset_password_request', data={'email': address}, headers=headers)


def test_a_chinese_reader_who_forgot_the_password_gets_a_chinese_email(
    app, client, make_user, outbox
):
    li = make_user('li')
    li.locale = 'zh_CN'
    db.session.commit()
    # Asked for from a browser that prefers English: the account's language decides.
    request_reset(client, 'li@example.com', ENGLISH)
    outbox.wait()
    [message] = outbox
    assert message.subject == '[Microblog] 重置您的密码'
    for body in (message.body, message.html):
        assert 'li，您好：' in body
        assert '此链接只能使用一次，有效期为 10 分钟。' in body
        assert 'Dear' not in body and 'valid for' not in body
    assert '<html lang="zh-CN">' in message.html
    [link] = {link for link in links_in(message.body) if '/reset_password/' in link}
    assert link in links_in(message.html)
    path = link.split('https://microblog.example.com', 1)[1]

    # The link works, in the language of the browser that opens it.
    reader = app.test_client()
    assert reader.get(path, headers=CHINESE).headers['Location'] == '/reset_password'
    form = reader.get('/reset_password', headers=CHINESE).text
    assert '<h1>重置您的密码</h1>' in form
    response = reader.post(
        '/reset_password',
        data={'password': NEW_PASSWORD, 'password2': NEW_PASSWORD},
        headers=CHINESE,
    )
    assert response.headers['Location'] == '/login'
    assert '您的密码已重置。' in reader.get('/login', headers=CHINESE).text
    signed_in = reader.post('/login', data={'username': 'li', 'password': NEW_PASSWORD})
    assert signed_in.headers['Location'] == '/index'

    outbox.wait()
    notice = outbox[1]
    assert notice.subject == '[Microblog] 您的密码已更改'
    assert '您的 Microblog 账号密码刚刚被更改' in notice.body
    assert '您的 Microblog 账号密码刚刚被更改' in notice.html


def test_an_english_reader_gets_an_english_email_whoever_asks(client, make_user, outbox):
    susan = make_user('susan')
    susan.locale = 'en'
    db.session.commit()
    request_reset(client, 'susan@example.com', CHINESE)
    outbox.wait()
    [message] = outbox
    assert message.subject == '[Microblog] Reset Your Password'
    assert 'Dear susan,' in message.body
    assert '<html lang="en">' in message.html


def test_the_decoy_of_an_unknown_address_is_rendered_in_english(client, outbox, monkeypatch):
    from app.mail import outbox as pipeline

    rendered = []
    real = pipeline.render_template

    def spy(name, **context):
        text = real(name, **context)
        rendered.append(text)
        return text

    monkeypatch.setattr(pipeline, 'render_template', spy)
    request_reset(client, 'nobody@example.com', CHINESE)
    outbox.wait()
    assert len(outbox) == 0
    assert len(rendered) == 2
    assert all('Dear nobody,' in text for text in rendered)


def test_emails_render_in_the_recipients_language_outside_any_request(app, make_user):
    """The worker has no request: force_locale alone decides, and leaves nothing behind."""
    from flask_babel import force_locale

    li = make_user('li')
    with force_locale('zh_CN'):
        text = render_template('email/password_changed.txt', user=li, reset_request_url='x')
    assert text.startswith('li，您好：')
    english = render_template('email/password_changed.txt', user=li, reset_request_url='x')
    assert english.startswith('Dear li,')


def test_admins_error_reports_stay_in_english(app):
    """Even when the request that failed was a Chinese reader's."""
    import logging

    from app.logs import build_error_report

    record = logging.LogRecord('app', logging.ERROR, __file__, 1, 'it broke', None, None)
    record.error_kind = 'KeyError'
    record.not_emailed = 0
    with app.test_request_context('/index', headers=CHINESE):
        assert current_locale() == 'zh_CN'
        message = build_error_report(app, record)
    assert 'Sincerely,<br>The Microblog Team' in message.html
    assert 'Sincerely' in message.html and '祝好' not in message.html
