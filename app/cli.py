"""Flask commands other than `flask mail`: seed data."""


def register_commands(app):
    """Add the project's commands to `flask`."""
    from app.mail.cli import mail_cli
    from app.seed import seed_command

    app.cli.add_command(mail_cli)
    app.cli.add_command(seed_command)
