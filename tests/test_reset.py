"""'Forgot your password?': the request, the email, the link, the new password."""

import base64
import json
import warnings
from datetime import timedelta

import jwt
import pytest
import sqlalchemy as sa

from app import db
from app.models import OutboundEmail, User, utcnow
from tests.helpers import PASSWORD, links_in

NEW_PASSWORD = 'quiet-Meadow-lantern-42'
CHECK_EMAIL = 'Check your email for the instructions to reset your password'
INVALID_LINK = 'This reset link is invalid or has expired.'


def request_reset(client, address):
    return client.post('/reset_password_request', data={'email': address})


def reset_link(message):
    """The reset link, checked to be the same in both bodies."""
    text_links = [link for link in links_in(message.body) if '/reset_password/' in link]
    html_links = [link for link in links_in(message.html) if '/reset_password/' in link]
    assert text_links and set(text_links) == set(html_links)
    return text_links[0]


def path_of(link):
    return link.split('https://microblog.example.com', 1)[1]


def test_the_whole_flow(client, make_user, outbox):
    make_user('susan')
    response = request_reset(client, 'susan@example.com')
    assert response.status_code == 302
    assert response.headers['Location'] == '/login'
    assert CHECK_EMAIL in client.get('/login').text

    outbox.wait()
    assert len(outbox) == 1
    message = outbox[0]
    assert message.recipients == ['susan@example.com']
    assert message.subject == '[Microblog] Reset Your Password'
    assert message.sender == 'no-reply@example.com'
    for body in (message.body, message.html):
        assert 'Dear susan' in body
        assert 'valid for 10 minutes' in body
        assert 'If you have not requested a password reset simply ignore this message.' in body
    link = reset_link(message)
    assert link.startswith('https://microblog.example.com/reset_password/')

    response = client.get(path_of(link))
    assert response.headers['Location'] == '/reset_password'
    page = client.get('/reset_password')
    assert page.status_code == 200
    assert 'Reset Your Password' in page.text

    response = client.post(
        '/reset_password', data={'password': NEW_PASSWORD, 'password2': NEW_PASSWORD}
    )
    assert response.headers['Location'] == '/login'
    assert 'Your password has been reset.' in client.get('/login').text

    failed = client.post('/login', data={'username': 'susan', 'password': PASSWORD})
    assert 'Invalid username or password' in failed.text
    ok = client.post('/login', data={'username': 'susan', 'password': NEW_PASSWORD})
    assert ok.headers['Location'] == '/index'


def test_email_goes_to_the_stored_address_whatever_the_case_typed(client, make_user, outbox):
    make_user('susan', email='Susan.Smith@example.com')
    request_reset(client, 'SUSAN.SMITH@EXAMPLE.COM')
    outbox.wait()
    assert [message.recipients for message in outbox] == [['Susan.Smith@example.com']]


def test_unknown_email_gets_the_same_answer_and_no_email(client, make_user, outbox):
    make_user('susan')
    known = request_reset(client, 'susan@example.com')
    known_page = client.get('/login').text
    unknown = request_reset(client, 'nobody@example.com')
    unknown_page = client.get('/login').text
    assert (known.status_code, known.headers['Location']) == (
        unknown.status_code,
        unknown.headers['Location'],
    )
    assert CHECK_EMAIL in known_page and CHECK_EMAIL in unknown_page
    outbox.wait()
    assert [message.recipients for message in outbox] == [['susan@example.com']]
    rows = db.session.execute(
        sa.select(OutboundEmail.recipient, OutboundEmail.status, OutboundEmail.last_error)
        .order_by(OutboundEmail.id)
        .execution_options(populate_existing=True)
    ).all()
    assert rows == [
        ('susan@example.com', 'sent', None),
        ('nobody@example.com', 'dropped', 'no account has this address'),
    ]


@pytest.mark.sqlite_only
@pytest.mark.parametrize('address', ['', 'not-an-email', 'a@b'])
def test_bad_email_is_refused_on_the_page(client, address, outbox):
    response = request_reset(client, address)
    assert response.status_code == 200
    assert 'class="error"' in response.text
    outbox.wait()
    assert len(outbox) == 0


@pytest.mark.sqlite_only
@pytest.mark.parametrize('path', ['/reset_password_request', '/reset_password/anything'])
def test_logged_in_user_goes_to_the_index(client, make_user, auth, path):
    make_user('susan')
    auth.login()
    assert client.get(path).headers['Location'] == '/index'


@pytest.mark.sqlite_only
def test_reset_page_without_a_link_says_so(client):
    response = client.get('/reset_password')
    assert response.headers['Location'] == '/reset_password_request'
    assert INVALID_LINK in client.get('/reset_password_request').text


def _b64(data):
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b'=').decode()


def _token(user, key=None, algorithm='HS256', **changes):
    payload = {
        'reset_password': user.id,
        'state': user.reset_state(),
        'iat': utcnow(),
        'exp': utcnow() + timedelta(minutes=10),
    }
    payload.update(changes)
    payload = {name: value for name, value in payload.items() if value is not None}
    key = key or 'test-secret-key-that-is-at-least-32-bytes-long'
    with warnings.catch_warnings():
        # PyJWT warns that this key is short for HS512; that token is refused anyway.
        warnings.simplefilter('ignore', jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(payload, key, algorithm)


def _unsigned(user):
    now = int(utcnow().timestamp())
    header = _b64({'alg': 'none', 'typ': 'JWT'})
    body = _b64(
        {
            'reset_password': user.id,
            'state': user.reset_state(),
            'iat': now,
            'exp': now + 600,
        }
    )
    return f'{header}.{body}.'


def _tamper_payload(user):
    header, _, signature = user.get_reset_password_token().split('.')
    body = _b64({'reset_password': user.id + 1, 'exp': int(utcnow().timestamp()) + 600})
    return f'{header}.{body}.{signature}'


def _tamper_signature(user):
    token = user.get_reset_password_token()
    last = 'A' if token[-2] != 'A' else 'B'
    return token[:-2] + last + token[-1]


BAD_TOKENS = {
    'garbage': lambda user: 'garbage',
    'three dots': lambda user: 'a.b.c',
    'tampered signature': _tamper_signature,
    'tampered payload': _tamper_payload,
    'expired': lambda user: user.get_reset_password_token(expires_in=-1),
    'wrong key': lambda user: _token(user, key='another-secret-key-that-is-32-bytes-long'),
    'alg none': _unsigned,
    'HS512': lambda user: _token(user, algorithm='HS512'),
    'missing exp': lambda user: _token(user, exp=None),
    'missing state': lambda user: _token(user, state=None),
    'other purpose': lambda user: _token(user, reset_password=None, confirm=user.id),
    'id as string': lambda user: _token(user, reset_password=str(user.id)),
    'unknown user': lambda user: _token(user, reset_password=user.id + 100),
}


@pytest.mark.sqlite_only
@pytest.mark.parametrize('kind', BAD_TOKENS)
def test_bad_tokens_are_refused(client, make_user, kind):
    user = make_user('susan')
    token = BAD_TOKENS[kind](user)
    assert User.verify_reset_password_token(token) is None
    response = client.get(f'/reset_password/{token}')
    assert response.headers['Location'] == '/reset_password_request'
    assert INVALID_LINK in client.get('/reset_password_request').text


def test_token_of_a_deleted_user_is_refused(client, make_user):
    user = make_user('susan')
    token = user.get_reset_password_token()
    db.session.execute(sa.delete(User).where(User.id == user.id))
    db.session.commit()
    assert User.verify_reset_password_token(token) is None


def test_token_from_before_a_password_change_is_refused(make_user):
    user = make_user('susan')
    token = user.get_reset_password_token()
    user.set_password('a-different-Password-99')
    db.session.commit()
    assert User.verify_reset_password_token(token) is None


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    ('password', 'password2', 'message'),
    [
        (NEW_PASSWORD, 'something-else-Entirely-7', 'Passwords must match.'),
        ('', '', 'This field is required.'),
        ('short', 'short', 'Use at least 8 characters.'),
        (PASSWORD, PASSWORD, 'Choose a password you have not used for this account.'),
    ],
)
def test_reset_form_errors(client, make_user, password, password2, message):
    user = make_user('susan')
    client.get(f'/reset_password/{user.get_reset_password_token()}')
    response = client.post('/reset_password', data={'password': password, 'password2': password2})
    assert response.status_code == 200
    assert message in response.text
    assert user.check_password(PASSWORD)


@pytest.mark.sqlite_only
def test_missing_csrf_token_is_refused(make_app):
    app = make_app(WTF_CSRF_ENABLED=True)
    client = app.test_client()
    response = client.post('/reset_password_request', data={'email': 'susan@example.com'})
    assert response.status_code == 400
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(OutboundEmail)) == 0


def test_request_is_stored_before_the_page_returns(make_app):
    app = make_app(MAIL_QUEUE='none')
    client = app.test_client()
    request_reset(client, 'susan@example.com')
    with app.app_context():
        stored = db.session.scalars(sa.select(OutboundEmail)).all()
        assert [(row.kind, row.data, row.status) for row in stored] == [
            ('reset_password', {'email': 'susan@example.com'}, 'pending')
        ]
