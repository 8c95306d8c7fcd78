"""emails stored as what to send, rendered at send time; accounts found by an email key

The outbox keeps a kind and its data instead of rendered bodies, so that no working
reset link is at rest; stored reset requests become outbox rows of their kind; each
account gets the key it is found by (IDNA 2008 ASCII domain, lower-cased local part).

Revision ID: 9c1d2e3f4a5b
Revises: 7f8e9d0c1b2a
Create Date: 2026-11-25 09:00:00

"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from app.addresses import lookup_key

revision = '9c1d2e3f4a5b'
down_revision = '7f8e9d0c1b2a'
branch_labels = None
depends_on = None

RESET_SUBJECT = '[Microblog] Reset Your Password'
CHANGED_SUBJECT = '[Microblog] Your password was changed'

user = sa.table(
    'user',
    sa.column('id', sa.Integer),
    sa.column('email', sa.String),
    sa.column('email_key', sa.String),
)
outbound_email = sa.table(
    'outbound_email',
    sa.column('id', sa.Integer),
    sa.column('subject', sa.String),
    sa.column('recipients', sa.JSON),
    sa.column('kind', sa.String),
    sa.column('data', sa.JSON),
    sa.column('recipient', sa.String),
    sa.column('status', sa.String),
    sa.column('attempts', sa.Integer),
    sa.column('created_at', sa.DateTime(timezone=True)),
    sa.column('next_attempt_at', sa.DateTime(timezone=True)),
    sa.column('claimed_until', sa.DateTime(timezone=True)),
    sa.column('claimed_by', sa.String),
    sa.column('last_error', sa.Text),
)
password_reset_request = sa.table(
    'password_reset_request',
    sa.column('email', sa.String),
    sa.column('created_at', sa.DateTime(timezone=True)),
)


def upgrade():
    connection = op.get_bind()
    now = datetime.now(UTC)

    # Every key first, so that two accounts for one mailbox stop the upgrade before
    # anything changed (SQLite cannot take back a column it added).
    keys = {}
    for user_id, email in connection.execute(sa.select(user.c.id, user.c.email)).all():
        key = lookup_key(email) or email.strip()
        if key in keys:
            raise RuntimeError(
                f'Accounts {keys[key]} and {user_id} have the same email address written two '
                f'ways ({key}); change one of them, then run `flask db upgrade` again.'
            )
        keys[key] = user_id
    with op.batch_alter_table('user', schema=None) as batch_op:
        batch_op.add_column(sa.Column('email_key', sa.String(length=320), nullable=True))
    for key, user_id in keys.items():
        connection.execute(sa.update(user).where(user.c.id == user_id).values(email_key=key))
    op.drop_index('ix_user_email_lower', table_name='user')
    with op.batch_alter_table('user', schema=None) as batch_op:
        batch_op.alter_column('email_key', existing_type=sa.String(length=320), nullable=False)
        batch_op.create_index(batch_op.f('ix_user_email_key'), ['email_key'], unique=True)

    with op.batch_alter_table('outbound_email', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('data', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('recipient', sa.String(length=320), nullable=True))
    # Rows written before: their kind from the subject, their data from the recipient,
    # so that what was waiting is still sent, rendered afresh.
    rows = connection.execute(
        sa.select(
            outbound_email.c.id,
            outbound_email.c.subject,
            outbound_email.c.recipients,
            outbound_email.c.status,
            outbound_email.c.claimed_until,
        )
    ).all()
    for row_id, subject, recipients, status, claimed_until in rows:
        recipient = (recipients or [None])[0]
        values = {'recipient': recipient, 'kind': 'unknown', 'data': {}}
        if subject == RESET_SUBJECT and recipient:
            values.update(kind='reset_password', data={'email': recipient})
        elif subject == CHANGED_SUBJECT and recipient:
            account = keys.get(lookup_key(recipient) or recipient.strip())
            if account is not None:
                values.update(kind='password_changed', data={'user_id': account})
        # A row being sent keeps its claim: if its worker is still at it, nobody else
        # takes it before the lease runs out.
        if status == 'sending' and claimed_until is None:
            values.update(status='pending')
        if values['kind'] == 'unknown' and status in ('pending', 'sending'):
            values.update(
                status='dropped', last_error='queued before emails were rendered at send time'
            )
        connection.execute(
            sa.update(outbound_email).where(outbound_email.c.id == row_id).values(**values)
        )
    # Blanked before the columns go: PostgreSQL keeps a dropped column's values in the
    # rows on disk until they are written again.
    bodies = sa.table('outbound_email', sa.column('text_body'), sa.column('html_body'))
    connection.execute(sa.update(bodies).values(text_body='', html_body=None))
    with op.batch_alter_table('outbound_email', schema=None) as batch_op:
        batch_op.alter_column('kind', existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column('data', existing_type=sa.JSON(), nullable=False)
        for column in ('subject', 'sender', 'recipients', 'text_body', 'html_body'):
            batch_op.drop_column(column)

    requests = connection.execute(
        sa.select(password_reset_request.c.email, password_reset_request.c.created_at)
    ).all()
    if requests:
        op.bulk_insert(
            outbound_email,
            [
                {
                    'kind': 'reset_password',
                    'data': {'email': email},
                    'recipient': email,
                    'status': 'pending',
                    'attempts': 0,
                    'created_at': created_at,
                    'next_attempt_at': now,
                }
                for email, created_at in requests
            ],
        )
    op.drop_table('password_reset_request')


def downgrade():
    op.create_table(
        'password_reset_request',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('email', sa.String(length=320), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    # The rendered bodies are gone for good: rows come back with empty ones.
    with op.batch_alter_table('outbound_email', schema=None) as batch_op:
        batch_op.add_column(sa.Column('subject', sa.String(255), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('sender', sa.String(320), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('recipients', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('text_body', sa.Text(), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('html_body', sa.Text(), nullable=True))
    connection = op.get_bind()
    table = sa.table(
        'outbound_email',
        sa.column('recipient', sa.String),
        sa.column('recipients', sa.JSON),
    )
    for recipient in connection.execute(sa.select(table.c.recipient).distinct()).scalars():
        same = table.c.recipient.is_(None) if recipient is None else table.c.recipient == recipient
        connection.execute(
            sa.update(table).where(same).values(recipients=[recipient] if recipient else [])
        )
    with op.batch_alter_table('outbound_email', schema=None) as batch_op:
        batch_op.alter_column('recipients', existing_type=sa.JSON(), nullable=False)
        for column in ('kind', 'data', 'recipient'):
            batch_op.drop_column(column)

    with op.batch_alter_table('user', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_user_email_key'))
        batch_op.drop_column('email_key')
    op.create_index('ix_user_email_lower', 'user', [sa.text('lower(email)')], unique=False)
