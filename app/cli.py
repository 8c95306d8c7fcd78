"""Flask commands other than `flask mail`: seed data, translations."""

import subprocess
import sys
from pathlib import Path

import click
from flask.cli import AppGroup

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / 'app' / 'translations'
CATALOG = TRANSLATIONS / 'messages.pot'
# Keywords of the strings to extract, beside gettext's own (_, gettext, ngettext...).
KEYWORDS = ['_l', 'lazy_gettext', 'lazy_ngettext:1,2']

translate = AppGroup('translate', help='Translation and localisation commands.')


def pybabel(*args):
    """Run a pybabel command from the project's folder; stop with its message if it fails."""
    command = [sys.executable, '-m', 'babel.messages.frontend', *args]
    if subprocess.run(command, cwd=ROOT).returncode != 0:
        raise click.ClickException(f'pybabel {args[0]} failed')


def extract():
    """Write messages.pot: every marked string of the Python code and the templates."""
    keywords = [option for keyword in KEYWORDS for option in ('-k', keyword)]
    pybabel(
        'extract',
        '-F',
        'babel.cfg',
        *keywords,
        '--no-wrap',
        '--sort-by-file',
        '--project',
        'Microblog',
        '-o',
        str(CATALOG),
        '.',  # babel.cfg's paths are from the project's folder
    )


@translate.command()
@click.argument('lang')
def init(lang):
    """Start the catalogue of a new language (LANG such as zh_CN)."""
    extract()
    try:
        pybabel('init', '--no-wrap', '-i', str(CATALOG), '-d', str(TRANSLATIONS), '-l', lang)
    finally:
        CATALOG.unlink(missing_ok=True)


@translate.command()
def update():
    """Add the strings marked since the last update to every catalogue."""
    extract()
    try:
        pybabel(
            'update', '--no-wrap', '--ignore-obsolete', '-i', str(CATALOG), '-d', str(TRANSLATIONS)
        )
    finally:
        CATALOG.unlink(missing_ok=True)


@translate.command()
def compile():  # noqa: A001 - the tutorial's name for it
    """Compile every catalogue into the .mo files the app reads."""
    pybabel('compile', '--statistics', '-d', str(TRANSLATIONS))


def register_commands(app):
    """Add the project's commands to `flask`."""
    from app.mail.cli import mail_cli
    from app.seed import seed_command

    app.cli.add_command(mail_cli)
    app.cli.add_command(seed_command)
    app.cli.add_command(translate)
