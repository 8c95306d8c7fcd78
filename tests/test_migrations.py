"""`flask db upgrade` on an empty database gives exactly what the models say."""

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import upgrade

from app import db


def test_upgrade_matches_the_models(make_app):
    app = make_app(create_tables=False)
    with app.app_context():
        upgrade()
        with db.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={'compare_type': True})
            differences = compare_metadata(context, db.metadata)
        names = set(db.inspect(db.engine).get_table_names())
    assert differences == []
    assert {'user', 'post', 'followers', 'outbound_email', 'password_reset_request'} <= names


def test_upgrade_creates_the_case_insensitive_email_index(make_app):
    app = make_app(create_tables=False)
    with app.app_context():
        upgrade()
        if db.engine.dialect.name == 'sqlite':
            query = "SELECT sql FROM sqlite_master WHERE name = 'ix_user_email_lower'"
        else:
            query = "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_user_email_lower'"
        definition = db.session.execute(sa.text(query)).scalar_one()
    assert 'lower(' in definition.lower() and 'email' in definition.lower()
