from datetime import UTC

import sqlalchemy as sa
import sqlalchemy.orm as so
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
from app.avatars import DIGEST_PATTERN, avatar_svg
from app.main import bp
from app.main.forms import EditProfileForm, EmptyForm, PostForm
from app.models import Post, User


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


def _post_id(name):
    """A post id from the query string, or None when it is missing or cannot be one."""
    value = request.args.get(name, type=int)
    return value if value is not None and 0 < value < 2**63 else None


def _fetch_posts(conditions, newest_first, limit):
    """Up to ``limit`` posts matching ``conditions``, with their authors, in one statement.

    The inner select finds the ids from the indexes alone, so only the rows shown
    are read from the table, however many posts match.
    """
    if newest_first:
        order = (Post.timestamp.desc(), Post.id.desc())
    else:
        order = (Post.timestamp.asc(), Post.id.asc())
    ids = sa.select(Post.id).where(*conditions).order_by(*order).limit(limit)
    query = (
        sa.select(Post)
        .options(so.joinedload(Post.author))
        .where(Post.id.in_(ids.scalar_subquery()))
        .order_by(*order)
    )
    return list(db.session.scalars(query))


def paginate_posts(query):
    """Cut ``query`` (a select of Post, newest first) into the page asked for by the URL."""
    per_page = current_app.config['POSTS_PER_PAGE']
    conditions = [query.whereclause] if query.whereclause is not None else []
    before = _post_id('before')
    after = _post_id('after')
    anchor_id = after if after is not None else before
    anchor = None
    if anchor_id is not None:
        anchor = db.session.execute(
            sa.select(Post.timestamp, Post.id).where(Post.id == anchor_id)
        ).first()
    if anchor is None:
        rows = _fetch_posts(conditions, True, per_page + 1)
        has_older = len(rows) > per_page
        items = rows[:per_page]
        has_newer = False
    elif after is not None:
        newer = sa.or_(
            Post.timestamp > anchor.timestamp,
            sa.and_(Post.timestamp == anchor.timestamp, Post.id > anchor.id),
        )
        rows = _fetch_posts([*conditions, newer], False, per_page + 1)
        has_newer = len(rows) > per_page
        items = list(reversed(rows[:per_page]))
        has_older = True
    else:
        older = sa.or_(
            Post.timestamp < anchor.timestamp,
            sa.and_(Post.timestamp == anchor.timestamp, Post.id < anchor.id),
        )
        rows = _fetch_posts([*conditions, older], True, per_page + 1)
        has_older = len(rows) > per_page
        items = rows[:per_page]
        has_newer = True
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
    if form.validate_on_submit():
        post = Post(body=form.post.data.strip(), author=current_user)
        db.session.add(post)
        db.session.commit()
        flash(_('Your post is now live!'), 'success')
        return redirect(url_for('main.index'))
    page = paginate_posts(current_user.following_posts())
    newer_url, older_url = page_links('main.index', page)
    return render_template(
        'index.html',
        title=_('Home'),
        form=form,
        posts=page.items,
        newer_url=newer_url,
        older_url=older_url,
    )


@bp.route('/explore')
@login_required
def explore():
    query = (
        sa.select(Post)
        .options(so.joinedload(Post.author))
        .order_by(Post.timestamp.desc(), Post.id.desc())
    )
    page = paginate_posts(query)
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
    user = db.first_or_404(sa.select(User).where(User.username == username))
    query = (
        user.posts.select()
        .options(so.joinedload(Post.author))
        .order_by(Post.timestamp.desc(), Post.id.desc())
    )
    page = paginate_posts(query)
    newer_url, older_url = page_links('main.user', page, username=user.username)
    form = EmptyForm()
    return render_template(
        'user.html',
        user=user,
        posts=page.items,
        newer_url=newer_url,
        older_url=older_url,
        form=form,
        followers=user.followers_count(),
        following=user.following_count(),
        is_following=current_user.is_following(user) if user != current_user else False,
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
