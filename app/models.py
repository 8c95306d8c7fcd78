"""Database models: users, posts, the followers graph and the email outbox."""

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import jwt
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import current_app
from flask_login import UserMixin
from sqlalchemy.dialects import postgresql, sqlite
from werkzeug.security import check_password_hash, generate_password_hash

from app import db
from app.addresses import lookup_key
from app.avatars import avatar_url


def utcnow():
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(sa.types.TypeDecorator):
    """A timestamp stored in UTC and always read back timezone-aware.

    SQLite keeps no zone, PostgreSQL does; this makes both hand back the same thing.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


followers = sa.Table(
    'followers',
    db.metadata,
    sa.Column('follower_id', sa.Integer, sa.ForeignKey('user.id'), primary_key=True),
    sa.Column('followed_id', sa.Integer, sa.ForeignKey('user.id'), primary_key=True),
    # The primary key serves "whom does X follow"; this serves "who follows X".
    sa.Index('ix_followers_followed_id', 'followed_id', 'follower_id'),
)


def hash_password(password):
    """A salted hash of ``password`` by the PASSWORD_HASH_METHOD setting (scrypt by default)."""
    return generate_password_hash(password, method=current_app.config['PASSWORD_HASH_METHOD'])


class User(UserMixin, db.Model):
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    username: so.Mapped[str] = so.mapped_column(sa.String(64), index=True, unique=True)
    email: so.Mapped[str] = so.mapped_column(sa.String(120), index=True, unique=True)
    # What the account is found by when someone types an address: see lookup_key.
    email_key: so.Mapped[str] = so.mapped_column(sa.String(320), index=True, unique=True)
    password_hash: so.Mapped[str | None] = so.mapped_column(sa.String(256))
    about_me: so.Mapped[str | None] = so.mapped_column(sa.String(140))
    last_seen: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime, default=utcnow)
    # A successful login ends the reset links sent before it: see reset_state.
    last_login_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime)
    # When the owner of ``email`` opened the link sent to it; None until then.
    email_confirmed_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime)
    # The language of the account's pages and emails ('en', 'zh_CN'); None until known.
    locale: so.Mapped[str | None] = so.mapped_column(sa.String(16))

    posts: so.WriteOnlyMapped['Post'] = so.relationship(back_populates='author')
    following: so.WriteOnlyMapped['User'] = so.relationship(
        secondary=followers,
        primaryjoin=(followers.c.follower_id == id),
        secondaryjoin=(followers.c.followed_id == id),
        back_populates='followers',
    )
    followers: so.WriteOnlyMapped['User'] = so.relationship(
        secondary=followers,
        primaryjoin=(followers.c.followed_id == id),
        secondaryjoin=(followers.c.follower_id == id),
        back_populates='following',
    )

    def __repr__(self):
        return f'<User {self.username}>'

    @so.validates('email')
    def _keep_email_key(self, key, address):
        self.email_key = email_lookup_key(address)
        return address

    @classmethod
    def by_email(cls, address):
        """A select of the account that has ``address``, however its case or domain is typed."""
        return sa.select(cls).where(cls.email_key == email_lookup_key(address))

    def set_password(self, password):
        """Store a salted hash of the password."""
        self.password_hash = hash_password(password)

    def swap_password_hash(self, new_hash):
        """Store ``new_hash`` only while the stored hash is still the one this object holds.

        A compare-and-set: of two requests checked against the same password, only the
        first gets True. ``User.password_hash`` as ``new_hash`` changes nothing but still
        holds the row, ordering the caller's transaction against a password change.
        """
        return (
            db.session.execute(
                sa.update(User)
                .where(User.id == self.id, User.password_hash == self.password_hash)
                .values(password_hash=new_hash)
                .execution_options(synchronize_session=False)
            ).rowcount
            == 1
        )

    def check_password(self, password):
        """Whether the password matches the stored hash."""
        if not self.password_hash:
            return False
        return check_password_hash(self.password_hash, password)

    def avatar(self, size):
        """The URL of the account's picture: drawn by the app unless AVATARS=gravatar."""
        return avatar_url(self, size)

    # Follow and unfollow write the pair directly, so that the same change asked twice
    # at once is made once: checking first, then writing, let two requests both insert
    # the pair (a duplicate key) or both delete it (a stale delete).
    def follow(self, user):
        """Follow ``user``; following again, even at the same moment, changes nothing."""
        db.session.flush()  # the ids of accounts not yet written
        pair = {'follower_id': self.id, 'followed_id': user.id}
        db.session.execute(insert_unless_present(followers).values(**pair))

    def unfollow(self, user):
        """Stop following ``user``; unfollowing again, even at the same moment, changes nothing."""
        db.session.flush()
        db.session.execute(
            sa.delete(followers).where(
                followers.c.follower_id == self.id, followers.c.followed_id == user.id
            )
        )

    def is_following(self, user):
        query = self.following.select().where(User.id == user.id)
        return db.session.scalar(query) is not None

    def followers_count(self):
        query = (
            sa.select(sa.func.count())
            .select_from(followers)
            .where(followers.c.followed_id == self.id)
        )
        return db.session.scalar(query)

    def following_count(self):
        query = (
            sa.select(sa.func.count())
            .select_from(followers)
            .where(followers.c.follower_id == self.id)
        )
        return db.session.scalar(query)

    def following_posts(self):
        """A select of the posts of the users this user follows and their own, newest first."""
        followed_ids = sa.select(followers.c.followed_id).where(followers.c.follower_id == self.id)
        return (
            sa.select(Post)
            .where(sa.or_(Post.user_id == self.id, Post.user_id.in_(followed_ids)))
            .options(so.joinedload(Post.author))
            .order_by(Post.timestamp.desc(), Post.id.desc())
        )

    # Reset links are bound to the password, the last login and the address they were
    # sent to: a new password, a successful login or a new address ends every link
    # sent before it.
    def reset_state(self, key=None):
        """A keyed fingerprint of what a reset link must still find to be valid."""
        last_login = self.last_login_at.isoformat() if self.last_login_at else ''
        return keyed_state(key, 'reset-state', self.password_hash or '', last_login, self.email_key)

    # A confirmation link is bound to the address it confirms and to its not being
    # confirmed yet: once used, or once the address changes, it is dead.
    def confirm_state(self, key=None):
        """A keyed fingerprint of what a link confirming the address must still find."""
        confirmed = self.email_confirmed_at.isoformat() if self.email_confirmed_at else ''
        return keyed_state(key, 'confirm-state', self.id, self.email_key, confirmed)

    def has_confirm_state(self, state):
        """Whether ``state`` is this user's confirmation state under any accepted key."""
        state = str(state)
        return any(hmac.compare_digest(state, self.confirm_state(key)) for key in signing_keys())

    @property
    def email_confirmed(self):
        return self.email_confirmed_at is not None

    def pending_email_change(self):
        """The change of address waiting for its confirmation link, or None."""
        return db.session.scalar(
            sa.select(EmailChange)
            .where(EmailChange.user_id == self.id, EmailChange.status == EmailChange.PENDING)
            .order_by(EmailChange.id.desc())
            .limit(1)
        )

    def get_id(self):
        """The key of the server-side session this user was loaded through (see auth.sessions)."""
        return getattr(self, 'session_key', None)

    def get_reset_password_token(self, expires_in=None):
        """A signed, expiring link token that dies when the password changes or the user logs in."""
        if expires_in is None:
            expires_in = current_app.config['RESET_PASSWORD_TOKEN_TTL']
        now = utcnow()
        payload = {
            'reset_password': self.id,
            'state': self.reset_state(),
            'iat': now,
            'exp': now + timedelta(seconds=expires_in),
        }
        return jwt.encode(payload, current_app.config['SECRET_KEY'], algorithm='HS256')

    @staticmethod
    def verify_reset_password_token(token):
        """The user a reset token belongs to, or None for any token that is not valid now."""
        payload = decode_signed(token, require=['exp', 'iat', 'reset_password', 'state'])
        if payload is None:
            return None
        user_id = payload['reset_password']
        if not isinstance(user_id, int) or isinstance(user_id, bool):
            return None
        user = db.session.get(User, user_id)
        if user is None or not user.has_reset_state(payload['state']):
            return None
        return user

    def has_reset_state(self, state):
        """Whether ``state`` is this user's reset state under any accepted key.

        Every key is tried, so that a key rotation does not end links already sent.
        """
        state = str(state)
        return any(hmac.compare_digest(state, self.reset_state(key)) for key in signing_keys())


def keyed_state(key, *parts):
    """An HMAC of ``parts`` under ``key`` (the current secret key by default), 32 hex digits."""
    key = key or current_app.config['SECRET_KEY']
    message = ':'.join(str(part) for part in parts).encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()[:32]


def signing_keys():
    """The current secret key first, then any fallbacks still accepted."""
    config = current_app.config
    return [config['SECRET_KEY'], *config['SECRET_KEY_FALLBACKS']]


def decode_signed(token, require):
    """Decode an HS256 token signed with any accepted key, or None when it is not valid."""
    if not isinstance(token, str) or len(token) > 4096:
        return None
    for key in signing_keys():
        try:
            return jwt.decode(token, key, algorithms=['HS256'], options={'require': require})
        except jwt.InvalidSignatureError:
            continue
        except jwt.InvalidTokenError:
            return None
    return None


# A profile page's user, its counts and whether the reader follows it, in one statement
# built once: the counts are count() queries on the followers index, no rows loaded.
PROFILE = sa.select(
    User,
    sa.select(sa.func.count())
    .select_from(followers)
    .where(followers.c.followed_id == User.id)
    .scalar_subquery()
    .label('followers'),
    sa.select(sa.func.count())
    .select_from(followers)
    .where(followers.c.follower_id == User.id)
    .scalar_subquery()
    .label('following'),
    sa.exists()
    .where(
        followers.c.follower_id == sa.bindparam('reader_id'),
        followers.c.followed_id == User.id,
    )
    .label('followed_by_reader'),
).where(User.username == sa.bindparam('username'))


class UserSession(db.Model):
    """A session on the server: a signed-in browser, or a password reset in progress.

    The browser's cookie holds only a random key; the row holds its SHA-256, so
    that neither a copied cookie after logout nor a read of this table gets in.
    Logging out, a password change and "log out other sessions" delete rows.
    """

    __tablename__ = 'user_session'

    LOGIN = 'login'
    RESET = 'reset'

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    key_hash: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey(User.id), index=True)
    purpose: so.Mapped[str] = so.mapped_column(sa.String(16))
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime, default=utcnow)
    expires_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime)
    remember: so.Mapped[bool] = so.mapped_column(default=False)
    ip_address: so.Mapped[str | None] = so.mapped_column(sa.String(45))
    device: so.Mapped[str | None] = so.mapped_column(sa.String(120))
    # For a reset in progress: the reset state the link carried (a fingerprint, not a token).
    reset_state: so.Mapped[str | None] = so.mapped_column(sa.String(64))

    user: so.Mapped[User] = so.relationship()

    def __repr__(self):
        return f'<UserSession {self.id} {self.purpose} of user {self.user_id}>'


class EmailChange(db.Model):
    """A request to move an account to a new address, and what became of it.

    The account keeps its address, and every email (resets included) keeps going
    there, until the link sent to the new address is used. The old address is told,
    with a link that cancels the change or, once made, undoes it for a while. Each
    link names this row: it works once, for this change only.
    """

    __tablename__ = 'email_change'

    PENDING = 'pending'  # waiting for the new address's link
    CONFIRMED = 'confirmed'  # made: the account has the new address
    CANCELLED = 'cancelled'  # cancelled from the old address, or by a newer request or password
    UNDONE = 'undone'  # made, then undone from the old address
    STATUSES = (PENDING, CONFIRMED, CANCELLED, UNDONE)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey(User.id), index=True)
    old_email: so.Mapped[str] = so.mapped_column(sa.String(120))
    # The old address's lookup key: while the change can be undone, nobody else may take it.
    old_email_key: so.Mapped[str] = so.mapped_column(sa.String(320), index=True)
    # Whether the old address was confirmed when the change was asked for: only then is
    # it trusted to cancel or undo the change.
    old_confirmed: so.Mapped[bool] = so.mapped_column(default=False)
    new_email: so.Mapped[str] = so.mapped_column(sa.String(120))
    status: so.Mapped[str] = so.mapped_column(sa.String(16), default=PENDING)
    requested_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime, default=utcnow)
    confirmed_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime)
    ended_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime)

    user: so.Mapped[User] = so.relationship()

    def __repr__(self):
        return f'<EmailChange {self.id} {self.status} of user {self.user_id}>'

    @classmethod
    def reserving(cls, address, now=None):
        """A select of the changes, still undoable, that keep ``address`` for their account.

        An address an account moved away from stays its own for EMAIL_CHANGE_UNDO_LIFETIME:
        whoever moved it (a thief, say) cannot register it or move another account to it
        in the meantime, so that undoing the change can always put it back.
        """
        now = now or utcnow()
        since = now - timedelta(seconds=current_app.config['EMAIL_CHANGE_UNDO_LIFETIME'])
        return sa.select(cls.user_id).where(
            cls.old_email_key == email_lookup_key(address),
            cls.old_confirmed.is_(True),
            cls.status == cls.CONFIRMED,
            cls.confirmed_at > since,
        )

    def move_on(self, status, **values):
        """Set ``status`` only while the row still has the status this object holds.

        A compare-and-set: of two uses of one link at once, only the first gets True.
        """
        return (
            db.session.execute(
                sa.update(EmailChange)
                .where(EmailChange.id == self.id, EmailChange.status == self.status)
                .values(status=status, **values)
                .execution_options(synchronize_session=False)
            ).rowcount
            == 1
        )

    @classmethod
    def cancel_pending(cls, user):
        """Cancel the changes of ``user`` still waiting for their link (in the transaction)."""
        db.session.execute(
            sa.update(cls)
            .where(cls.user_id == user.id, cls.status == cls.PENDING)
            .values(status=cls.CANCELLED, ended_at=utcnow())
            .execution_options(synchronize_session=False)
        )


# Usernames are unique ignoring case, in the database, so that no code path can create
# a case-duplicate (USERNAME_PATTERN keeps them ASCII, which lower() folds alike on
# SQLite and PostgreSQL). It also serves the login's case-insensitive lookup.
sa.Index('ix_user_username_lower', sa.func.lower(User.username), unique=True)


def insert_unless_present(table):
    """An INSERT that does nothing when the row's key is already there (SQLite, PostgreSQL)."""
    dialect = postgresql if db.session.get_bind().dialect.name == 'postgresql' else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


class Post(db.Model):
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    body: so.Mapped[str] = so.mapped_column(sa.String(140))
    timestamp: so.Mapped[datetime] = so.mapped_column(UTCDateTime, index=True, default=utcnow)
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey(User.id))

    author: so.Mapped[User] = so.relationship(back_populates='posts')

    __table_args__ = (sa.Index('ix_post_user_id_timestamp', 'user_id', 'timestamp'),)

    def __repr__(self):
        return f'<Post {self.body}>'


def email_lookup_key(address):
    """The key of an address (see app.addresses), or for a string that is no address at
    all the string itself, which no account's key can equal."""
    return lookup_key(address) or address.strip()


class OutboundEmail(db.Model):
    """A message in the outbox: what to send (a kind and its data), never its rendered text.

    Stored before the request returns, rendered and delivered in the background.
    """

    __tablename__ = 'outbound_email'

    PENDING = 'pending'
    SENDING = 'sending'
    SENT = 'sent'
    FAILED = 'failed'
    DROPPED = 'dropped'  # nothing to send, or a link that would have come too late
    STATUSES = (PENDING, SENDING, SENT, FAILED, DROPPED)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    kind: so.Mapped[str] = so.mapped_column(sa.String(64))
    # What the kind's builder needs: ids and addresses, never a token.
    data: so.Mapped[dict] = so.mapped_column(sa.JSON)
    # For admins: the address it is for, then the address it was sent to.
    recipient: so.Mapped[str | None] = so.mapped_column(sa.String(320))
    status: so.Mapped[str] = so.mapped_column(sa.String(16), default=PENDING)
    attempts: so.Mapped[int] = so.mapped_column(default=0)
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime, default=utcnow)
    claimed_until: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime)
    claimed_by: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    sent_at: so.Mapped[datetime | None] = so.mapped_column(UTCDateTime)
    last_error: so.Mapped[str | None] = so.mapped_column(sa.Text)

    __table_args__ = (sa.Index('ix_outbound_email_status_next', 'status', 'next_attempt_at'),)

    def __repr__(self):
        return f'<OutboundEmail {self.id} {self.kind} {self.status} to {self.recipient}>'
