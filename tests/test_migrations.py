"""`flask db upgrade` on an empty database gives exactly what the models say."""

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
    assert names >= {'user', 'post', 'followers', 'outbound_email'}
    assert 'password_reset_request' not in names


def test_upgrade_makes_the_email_key_unique(make_app):
    app = make_app(create_tables=False)
    with app.app_context():
        upgrade()
        indexes = {index['name']: index for index in db.inspect(db.engine).get_indexes('user')}
    assert indexes['ix_user_email_key']['column_names'] == ['email_key']
    assert indexes['ix_user_email_key']['unique']
