"""the language of each account's pages and emails

A nullable column: accounts made before it have no language until their owner signs
in or chooses one, and their email is in English meanwhile.

Revision ID: 5a6b7c8d9e0f
Revises: c5d6e7f8a9b0
Create Date: 2026-11-27 09:00:00

"""

import sqlalchemy as sa
from alembic import op

revision = '5a6b7c8d9e0f'
down_revision = 'c5d6e7f8a9b0'
branch_labels = None
depends_on = None


# Plain ADD and DROP COLUMN, which SQLite (3.35 and later) runs in place: batch mode
# would copy the table and lose the index on lower(username), which it cannot reflect.
def upgrade():
    op.add_column('user', sa.Column('locale', sa.String(length=16), nullable=True))


def downgrade():
    op.drop_column('user', 'locale')
