"""`flask db upgrade` on an empty database gives exactly what the models say."""

import re
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import upgrade

from app import db
from app.mail import deliver_pending
from app.models import OutboundEmail, User

# SQLite cannot reflect an index on an expression (lower(username)), so SQLAlchemy and
# Alembic say they skip it; test_expression_indexes_match_the_models checks those indexes.
pytestmark = [
    pytest.mark.filterwarnings(
        'ignore:Skipped unsupported reflection of expression-based index:sqlalchemy.exc.SAWarning'
    ),
    pytest.mark.filterwarnings(
        'ignore:autogenerate skipping metadata-specified expression-based index:UserWarning'
    ),
]


def test_upgrade_matches_the_models(make_app):
    app = make_app(create_tables=False)
    with app.app_context():
        upgrade()
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={'compare_type': True})
            differences = compare_metadata(context, db.metadata)
        names = set(db.inspect(db.engine).get_table_names())
    assert differences == []
    assert names >= {'user', 'post', 'followers', 'outbound_email'}
    assert 'password_reset_request' not in names


def expression_indexes(metadata):
    """The indexes the models declare on an expression rather than on columns, by name."""
    return {
        index.name: index
        for table in metadata.tables.values()
        for index in table.indexes
        if any(not isinstance(part, sa.Column) for part in index.expressions)
    }


def index_definitions(connection):
    """Each index's name, whether it is unique, and what it is on, as the database has it."""
    if connection.dialect.name == 'sqlite':
        rows = connection.execute(
            sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        )
        return {name: sql for name, sql in rows}
    rows = connection.execute(
        sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'")
    )
    return {name: definition for name, definition in rows}


def comparable(definition):
    """An index definition's words, without quoting, casts, schema or brackets (PostgreSQL
    writes lower(username) back as lower((username)::text))."""
    return re.sub(r'::\w+|"|public\.|USING btree|[()]', ' ', definition).lower().split()


def test_expression_indexes_match_the_models(make_app):
    """What compare_metadata cannot see on SQLite: indexes on lower(username) and the like."""
    app = make_app(create_tables=False)
    with app.app_context():
        upgrade()
        with db.engine.connect() as connection:
            found = index_definitions(connection)
        declared = expression_indexes(db.metadata)
        assert 'ix_user_username_lower' in declared
        for name, index in declared.items():
            expected = str(sa.schema.CreateIndex(index).compile(dialect=db.engine.dialect))
            assert name in found, f'{name} is in the models but not in the database'
            assert comparable(found[name]) == comparable(expected)


def test_upgrade_makes_the_email_key_unique(make_app):
    app = make_app(create_tables=False)
    with app.app_context():
        upgrade()
        indexes = {index['name']: index for index in db.inspect(db.engine).get_indexes('user')}
    assert indexes['ix_user_email_key']['column_names'] == ['email_key']
    assert indexes['ix_user_email_key']['unique']


def test_upgrade_keeps_waiting_mail_and_leaves_no_link_at_rest(make_app):
    """From the outbox that stored rendered bodies to the one that stores what to send."""
    app = make_app(create_tables=False, MAIL_QUEUE='none', MAIL_SUPPRESS_SEND=True)
    old_link = 'https://microblog.example.com/reset_password/eyJhbGciOi.eyJyZXNldF9w.c2lnbmF0dXJl'
    now = datetime.now(UTC)
    with app.app_context():
        upgrade(revision='7f8e9d0c1b2a')
        users = sa.table(
            'user', *(sa.column(name) for name in ('id', 'username', 'email', 'password_hash'))
        )
        db.session.execute(
            sa.insert(users),
            [
                {'id': 1, 'username': 'hans', 'email': 'hans@straße.de', 'password_hash': 'x'},
                {'id': 2, 'username': 'ann', 'email': 'Ann@Example.com', 'password_hash': 'x'},
            ],
        )
        stamp = sa.DateTime(timezone=True)
        outbox = sa.table(
            'outbound_email',
            *(sa.column(name) for name in ('subject', 'sender', 'text_body', 'html_body')),
            *(sa.column(name) for name in ('status', 'attempts')),
            sa.column('recipients', sa.JSON),
            sa.column('created_at', stamp),
            sa.column('next_attempt_at', stamp),
        )
        row = {
            'sender': 'no-reply@example.com',
            'text_body': f'open {old_link}',
            'html_body': f'<a href="{old_link}">',
            'attempts': 1,
            'created_at': now,
            'next_attempt_at': now,
        }
        reset, changed = '[Microblog] Reset Your Password', '[Microblog] Your password was changed'
        db.session.execute(
            sa.insert(outbox),
            [
                {**row, 'subject': reset, 'recipients': ['hans@straße.de'], 'status': 'sent'},
                {**row, 'subject': reset, 'recipients': ['Ann@Example.com'], 'status': 'pending'},
                {**row, 'subject': changed, 'recipients': ['ann@example.com'], 'status': 'sending'},
                {**row, 'subject': 'Hello', 'recipients': ['x@example.com'], 'status': 'pending'},
            ],
        )
        requests = sa.table(
            'password_reset_request', sa.column('email'), sa.column('created_at', stamp)
        )
        db.session.execute(sa.insert(requests), [{'email': 'HANS@STRASSE.de', 'created_at': now}])
        db.session.commit()

        upgrade()
        assert [user.email_key for user in db.session.scalars(sa.select(User))] == [
            'hans@xn--strae-oqa.de',
            'ann@example.com',
        ]
        rows = db.session.scalars(sa.select(OutboundEmail).order_by(OutboundEmail.id)).all()
        assert [(r.kind, r.data, r.status, r.recipient) for r in rows] == [
            ('reset_password', {'email': 'hans@straße.de'}, 'sent', 'hans@straße.de'),
            ('reset_password', {'email': 'Ann@Example.com'}, 'pending', 'Ann@Example.com'),
            ('password_changed', {'user_id': 2}, 'pending', 'ann@example.com'),
            ('unknown', {}, 'dropped', 'x@example.com'),
            ('reset_password', {'email': 'HANS@STRASSE.de'}, 'pending', 'HANS@STRASSE.de'),
        ]
        for table in db.metadata.sorted_tables:
            for values in db.session.execute(sa.select(table)).all():
                assert not any(re.search(r'eyJ\w+\.', str(value)) for value in values)

        report = deliver_pending()
        assert (len(report.sent), len(report.dropped)) == (2, 1)  # strasse.de is not straße.de


def test_downgrade_and_upgrade_again(make_app):
    from flask_migrate import downgrade

    app = make_app(create_tables=False)
    with app.app_context():
        upgrade()
        db.session.add(User(username='hans', email='hans@straße.de', password_hash='x'))
        db.session.add(OutboundEmail(kind='reset_password', data={'email': 'a@example.com'}))
        db.session.commit()
        downgrade(revision='7f8e9d0c1b2a')
        names = set(db.inspect(db.engine).get_table_names())
        assert 'password_reset_request' in names
        upgrade()
        assert db.session.scalar(sa.select(User.email_key)) == 'hans@xn--strae-oqa.de'


def test_usernames_that_differ_only_in_case_stop_the_upgrade_by_name(make_app):
    app = make_app(create_tables=False)
    names = ['Bob', 'bob', 'alice', 'ALICE', 'carol', 'BOB']
    with app.app_context():
        upgrade(revision='9c1d2e3f4a5b')
        users = sa.table(
            'user', *(sa.column(name) for name in ('id', 'username', 'email', 'email_key'))
        )
        db.session.execute(
            sa.insert(users),
            [
                {
                    'id': number,
                    'username': name,
                    'email': f'u{number}@example.com',
                    'email_key': f'u{number}@example.com',
                }
                for number, name in enumerate(names, start=1)
            ],
        )
        db.session.commit()
        result = app.test_cli_runner().invoke(args=['db', 'upgrade'])
        assert result.exit_code == 1
        printed = ' '.join(result.stderr.split())
        assert (
            "these are not: 'Bob' (id 1) and 'bob' (id 2) and 'BOB' (id 6); "
            "'alice' (id 3) and 'ALICE' (id 4)." in printed
        )
        assert 'carol' not in printed and 'Rename all but one account' in printed
        db.session.rollback()

        for user_id, new_name in ((2, 'bobby'), (4, 'alicia'), (6, 'robert')):
            rename = sa.update(users).where(users.c.id == user_id).values(username=new_name)
            db.session.execute(rename)
        db.session.commit()
        upgrade()
        db.session.add(User(id=7, username='CAROL', email='carol@example.com', password_hash='x'))
        with pytest.raises(sa.exc.IntegrityError, match='ix_user_username_lower'):
            db.session.commit()
        db.session.rollback()
        assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 6


def test_the_username_index_goes_on_downgrade(make_app):
    from flask_migrate import downgrade

    app = make_app(create_tables=False)
    with app.app_context():
        upgrade()
        downgrade(revision='b4e5f6a7c8d9')
        # Through the table as it is at that revision: the model has later columns.
        old_user = sa.table(
            'user',
            *(sa.column(name) for name in ('username', 'email', 'email_key', 'password_hash')),
        )
        db.session.execute(
            sa.insert(old_user),
            [
                {'username': name, 'email': f'{a}@example.com', 'email_key': f'{a}@example.com'}
                | {'password_hash': 'x'}
                for name, a in (('dave', 'dave'), ('Dave', 'other'))
            ],
        )
        db.session.commit()
        assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 2
