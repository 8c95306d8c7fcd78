"""usernames unique ignoring case

A unique index on lower(username), so that no code path can create an account whose
name differs from another's only in case ('Bob' beside 'bob'). Existing duplicates
stop the upgrade with a message that names them: which account keeps the name is a
decision for a person, not for a migration.

Revision ID: 4e5f6a7b8c9d
Revises: b4e5f6a7c8d9
Create Date: 2026-11-26 09:00:00

"""

import sqlalchemy as sa
from alembic import op

revision = '4e5f6a7b8c9d'
down_revision = 'b4e5f6a7c8d9'
branch_labels = None
depends_on = None

user = sa.table('user', sa.column('id', sa.Integer), sa.column('username', sa.String))


def case_duplicates(connection):
    """Groups of (id, username) whose names are equal once lower-cased by the database."""
    folded = sa.func.lower(user.c.username)
    clashing = sa.select(folded).group_by(folded).having(sa.func.count() > 1).scalar_subquery()
    rows = connection.execute(
        sa.select(folded.label('folded'), user.c.id, user.c.username)
        .where(folded.in_(clashing))
        .order_by(user.c.id)
    ).all()
    groups = {}  # in the order of their first account
    for key, user_id, username in rows:
        groups.setdefault(key, []).append((user_id, username))
    return list(groups.values())


def upgrade():
    duplicates = case_duplicates(op.get_bind())
    if duplicates:
        described = '; '.join(
            ' and '.join(f'{username!r} (id {user_id})' for user_id, username in group)
            for group in duplicates
        )
        raise RuntimeError(
            f'Usernames must be unique ignoring case, and these are not: {described}. '
            'Rename all but one account of each group (for example with '
            '`flask shell`: db.session.get(User, ID).username = "new-name"; db.session.commit()), '
            'then run `flask db upgrade` again.'
        )
    op.create_index('ix_user_username_lower', 'user', [sa.text('lower(username)')], unique=True)


def downgrade():
    op.drop_index('ix_user_username_lower', table_name='user')
