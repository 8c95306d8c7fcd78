"""confirmed addresses and changes of address

``user.email_confirmed_at``: when the account's address was confirmed by the link
sent to it. Accounts made before this have never confirmed theirs, so it starts
empty and their owners see a notice with a link to confirm.

``email_change``: a change of address asked for, waiting for the new address's
link, made, cancelled or undone. Its rows hold addresses and times, never a token;
the old address's key keeps it for its account while the change can be undone.

Revision ID: c5d6e7f8a9b0
Revises: 4e5f6a7b8c9d
Create Date: 2026-11-25 10:00:00

"""

import sqlalchemy as sa
from alembic import op

revision = 'c5d6e7f8a9b0'
down_revision = '4e5f6a7b8c9d'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('user', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('email_confirmed_at', sa.DateTime(timezone=True), nullable=True)
        )

    op.create_table(
        'email_change',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('old_email', sa.String(length=120), nullable=False),
        sa.Column('old_email_key', sa.String(length=320), nullable=False),
        sa.Column('old_confirmed', sa.Boolean(), nullable=False),
        sa.Column('new_email', sa.String(length=120), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('requested_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('confirmed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['user.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('email_change', schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f('ix_email_change_old_email_key'), ['old_email_key'], unique=False
        )
        batch_op.create_index(batch_op.f('ix_email_change_user_id'), ['user_id'], unique=False)


def downgrade():
    with op.batch_alter_table('email_change', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_email_change_user_id'))
        batch_op.drop_index(batch_op.f('ix_email_change_old_email_key'))
    op.drop_table('email_change')
    # Not in batch mode: on SQLite that copies the table, and the copy would lose the
    # index on lower(username).
    op.drop_column('user', 'email_confirmed_at')
