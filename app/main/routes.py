from datetime import UTC

import sqlalchemy as sa
from flask import (
    abort,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_login import current_user, login_required

from app import db
from app.auth.forms import commit_or_explain
from app.avatars import DIGEST_PATTERN, avatar_svg, avatar_url
from app.links import user_url
from app.main import bp
from app.main.forms import EditProfileForm, EmptyForm, PostForm
from app.models import PROFILE, Post, User, followers


@bp.app_template_filter('utc_iso')
def utc_iso(moment):
    """An ISO 8601 time that says it is UTC (SQLite gives it back without its zone)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


class PostPage:
    """One page of posts, newest first, with links to the newer and older pages.

    Pages are anchored on a post (keyset pagination) rather than numbered, so the
    last page costs what the first one does, and no page has to count every post.
    """

    def __init__(self, items, newer_id, older_id):
        self.items = items
        self.newer_id = newer_id
        self.older_id = older_id


class ShownAuthor:
    """The author of listed posts, as a post card shows them: a name and a picture."""

    __slots__ = ('id', 'username', 'email', '_avatars')

    def __init__(self, id, username, email):
        self.id = id
        self.username = username
        self.email = email  # for AVATARS=gravatar
        self._avatars = {}

    def url(self):
        """The URL of the author's page."""
        return user_url(self.username)

    def avatar(self, size):
        """The URL of the author's picture, as ``User.avatar`` gives it."""
        url = self._avatars.get(size)
        if url is None:
            url = self._avatars[size] = avatar_url(self, size)
        return url


class ShownPost:
    """A listed post: what its card shows, and its id for the links to other pages."""

    __slots__ = ('id', 'body', 'timestamp', 'author')

    def __init__(self, id, body, timestamp, author):
        self.id = id
        self.body = body
        self.timestamp = timestamp
        self.author = author


def shown_posts(rows):
    """Listed posts from rows of (id, body, timestamp, author id, username, email); the
    posts of one author share one ShownAuthor, so that its picture is found once."""
    authors = {}
    posts = []
    for post_id, body, timestamp, author_id, username, email in rows:
        author = authors.get(author_id)
        if author is None:
            author = authors[author_id] = ShownAuthor(author_id, username, email)
        posts.append(ShownPost(post_id, body, timestamp, author))
    return posts


# Statements are built once per process with bound parameters for what changes from one
# request to the next (the reader, the author, the anchor): built and keyed for the
# statement cache on every request, they cost SQLAlchemy more than the database takes
# to run them. Listings are Core statements on the tables, read as plain rows: a page
# needs three columns of a post and three of its author, and loading 25 Post and User
# objects through the ORM took four times as long as running the statement.
_POST = Post.__table__.c
_USER = User.__table__.c
_ANCHOR_TIMESTAMP = sa.bindparam('anchor_timestamp', type_=_POST.timestamp.type)
_ANCHOR_ID = sa.bindparam('anchor_id', type_=sa.Integer)
_ANCHOR = sa.select(_POST.timestamp, _POST.id).where(_POST.id == sa.bindparam('anchor'))
_NEWEST_FIRST = (_POST.timestamp.desc(), _POST.id.desc())
_OLDEST_FIRST = (_POST.timestamp.asc(), _POST.id.asc())
_NEWER = sa.or_(
    _POST.timestamp > _ANCHOR_TIMESTAMP,
    sa.and_(_POST.timestamp == _ANCHOR_TIMESTAMP, _POST.id > _ANCHOR_ID),
)
_OLDER = sa.or_(
    _POST.timestamp < _ANCHOR_TIMESTAMP,
    sa.and_(_POST.timestamp == _ANCHOR_TIMESTAMP, _POST.id < _ANCHOR_ID),
)


class Listing:
    """The posts a kind of page lists: conditions on the post table, with bound parameters,
    and other conditions that say the same to a database whose planner prefers them."""

    def __init__(self, *conditions, **by_dialect):
        self.conditions = conditions
        self.by_dialect = by_dialect
        self._statements = {}

    def statement(self, anchored, limit, dialect):
        """Up to ``limit`` posts with their authors, in one statement: the newest
        (``anchored`` None), or those 'newer' or 'older' than the anchor post.

        The inner select finds the ids from the indexes alone, so only the rows shown
        are read from the table, however many posts match.
        """
        key = (anchored, limit, dialect)
        statement = self._statements.get(key)
        if statement is None:
            conditions = self.by_dialect.get(dialect, self.conditions)
            extra = {None: [], 'newer': [_NEWER], 'older': [_OLDER]}[anchored]
            order = _OLDEST_FIRST if anchored == 'newer' else _NEWEST_FIRST
            # The limit is written into the statement, not bound: PostgreSQL then plans
            # a prepared statement once for every reader (its generic plan), where an
            # unknown limit made that plan a scan of the whole table, so that it planned
            # the listing again on every page.
            ids = (
                sa.select(_POST.id)
                .where(*conditions, *extra)
                .order_by(*order)
                .limit(sa.literal_column(str(int(limit))))
            )
            statement = self._statements[key] = (
                sa.select(
                    _POST.id, _POST.body, _POST.timestamp, _USER.id, _USER.username, _USER.email
                )
                .join_from(Post.__table__, User.__table__, _POST.user_id == _USER.id)
                .where(_POST.id.in_(ids.scalar_subquery()))
                .order_by(*order)
            )
        return statement


EVERYONE = Listing()
BY_AUTHOR = Listing(_POST.user_id == sa.bindparam('author_id'))
# The reader's own posts and those of the users they follow. For SQLite, as one list of
# authors, whose posts each come from the post(user_id, timestamp) index: written as
# "their own OR followed", SQLite merged two index searches into a set of row ids first,
# ten times slower for a reader who follows 100 busy authors. PostgreSQL plans the OR
# well; given the list, it walked post(timestamp) testing every post against it.
_FOLLOWED = sa.select(followers.c.followed_id).where(
    followers.c.follower_id == sa.bindparam('reader_id')
)
HOME = Listing(
    _POST.user_id.in_(
        sa.union_all(sa.select(sa.bindparam('reader_id', type_=sa.Integer)), _FOLLOWED)
    ),
    postgresql=[sa.or_(_POST.user_id == sa.bindparam('reader_id'), _POST.user_id.in_(_FOLLOWED))],
)


def _post_id(name):
    """A post id from the query string, or None when it is missing or cannot be one."""
    value = request.args.get(name, type=int)
    return value if value is not None and 0 < value < 2**63 else None


def paginate_posts(listing, **params):
    """Cut ``listing`` (its parameters in ``params``) into the page asked for by the URL."""
    per_page = current_app.config['POSTS_PER_PAGE']
    before = _post_id('before')
    after = _post_id('after')
    anchor_id = after if after is not None else before
    anchor = None
    if anchor_id is not None:
        anchor = db.session.connection().execute(_ANCHOR, {'anchor': anchor_id}).first()
    if anchor is None:
        anchored = None
    else:
        anchored = 'newer' if after is not None else 'older'
        params.update(anchor_timestamp=anchor.timestamp, anchor_id=anchor.id)
    statement = listing.statement(anchored, per_page + 1, db.engine.dialect.name)
    rows = shown_posts(db.session.connection().execute(statement, params))
    items = rows[:per_page]
    if anchored == 'newer':
        has_newer, has_older = len(rows) > per_page, True
        items.reverse()
    else:
        has_newer, has_older = anchored == 'older', len(rows) > per_page
    return PostPage(
        items,
        newer_id=items[0].id if has_newer and items else None,
        older_id=items[-1].id if has_older and items else None,
    )


def page_links(endpoint, page, **values):
    """URLs of the newer and older pages, or None where there is none."""
    newer = url_for(endpoint, after=page.newer_id, **values) if page.newer_id else None
    older = url_for(endpoint, before=page.older_id, **values) if page.older_id else None
    return newer, older


@bp.route('/', methods=['GET', 'POST'])
@bp.route('/index', methods=['GET', 'POST'])
@login_required
def index():
    form = PostForm()
    may_post = current_user.email_confirmed or current_app.config['UNCONFIRMED_CAN_POST']
    if request.method == 'POST' and not may_post:
        flash(_('Confirm your email address to post: open the link we sent you.'), 'error')
        return redirect(url_for('main.index'))
    if form.validate_on_submit():
        post = Post(body=form.post.data.strip(), author=current_user)
        db.session.add(post)
        db.session.commit()
        flash(_('Your post is now live!'), 'success')
        return redirect(url_for('main.index'))
    page = paginate_posts(HOME, reader_id=current_user.id)
    newer_url, older_url = page_links('main.index', page)
    return render_template(
        'index.html',
        title=_('Home'),
        form=form,
        may_post=may_post,
        posts=page.items,
        newer_url=newer_url,
        older_url=older_url,
    )


@bp.route('/explore')
@login_required
def explore():
    page = paginate_posts(EVERYONE)
    newer_url, older_url = page_links('main.explore', page)
    return render_template(
        'index.html',
        title=_('Explore'),
        posts=page.items,
        newer_url=newer_url,
        older_url=older_url,
    )


@bp.route('/user/<username>')
@login_required
def user(username):
    profile = db.session.execute(
        PROFILE, {'username': username, 'reader_id': current_user.id}
    ).first()
    if profile is None:
        abort(404)
    user = profile.User
    page = paginate_posts(BY_AUTHOR, author_id=user.id)
    newer_url, older_url = page_links('main.user', page, username=user.username)
    form = EmptyForm()
    return render_template(
        'user.html',
        user=user,
        posts=page.items,
        newer_url=newer_url,
        older_url=older_url,
        form=form,
        followers=profile.followers,
        following=profile.following,
        is_following=bool(profile.followed_by_reader) and user != current_user,
    )


@bp.route('/edit_profile', methods=['GET', 'POST'])
@login_required
def edit_profile():
    form = EditProfileForm(current_user.username)
    if form.validate_on_submit():
        current_user.username = form.username.data
        current_user.about_me = form.about_me.data
        if commit_or_explain(form):
            flash(_('Your changes have been saved.'), 'success')
            return redirect(url_for('main.edit_profile'))
    elif request.method == 'GET':
        form.username.data = current_user.username
        form.about_me.data = current_user.about_me
    return render_template('edit_profile.html', title=_('Edit Profile'), form=form)


def change_following(username, follow):
    """Follow or unfollow ``username`` for the current user, from a POST form with CSRF."""
    form = EmptyForm()
    if not form.validate_on_submit():
        return redirect(url_for('main.index'))
    user = db.session.scalar(sa.select(User).where(User.username == username))
    if user is None:
        flash(_('User %(username)s not found.', username=username), 'error')
        return redirect(url_for('main.index'))
    if user == current_user:
        message = _('You cannot follow yourself!') if follow else _('You cannot unfollow yourself!')
        flash(message, 'error')
        return redirect(url_for('main.user', username=username))
    if follow:
        current_user.follow(user)
        message = _('You are following %(username)s!', username=username)
    else:
        current_user.unfollow(user)
        message = _('You are not following %(username)s.', username=username)
    db.session.commit()
    flash(message, 'success')
    return redirect(url_for('main.user', username=username))


@bp.route('/follow/<username>', methods=['POST'])
@login_required
def follow(username):
    return change_following(username, follow=True)


@bp.route('/unfollow/<username>', methods=['POST'])
@login_required
def unfollow(username):
    return change_following(username, follow=False)


@bp.route('/avatar/<digest>.svg')
def avatar(digest):
    """An account's picture, drawn from the keyed hash in its URL (see app.avatars).

    The same for everyone and never changing, so it is cached for a year, and it
    needs no login: the URL says nothing about the account.
    """
    if not DIGEST_PATTERN.fullmatch(digest):
        abort(404)
    response = make_response(avatar_svg(digest))
    response.mimetype = 'image/svg+xml'
    response.headers['Cache-Control'] = 'public, max-age=31536000, immutable'
    # Nothing in the drawing loads or runs anything, even when opened as a page.
    response.headers['Content-Security-Policy'] = "default-src 'none'"
    return response
