"""A fresh copy of the project in a temporary folder, and commands run in it as a newcomer would."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# What a clone does not have: the virtualenv, local settings, data, caches, logs.
NOT_IN_A_CLONE = shutil.ignore_patterns(
    '.git',
    '.venv',
    '.venv-mutants',
    'mutants',
    '.env',
    '*.db',
    '*.db-shm',
    '*.db-wal',
    '__pycache__',
    '.pytest_cache',
    '.ruff_cache',
    '.hypothesis',
    'logs',
    'instance',
    'test-artifacts',
    'results',
)
# Only what any shell has: no Microblog setting leaks in from the test's environment.
KEPT_VARIABLES = ('HOME', 'LANG', 'LC_ALL', 'TMPDIR', 'SSL_CERT_FILE')


def fresh_checkout(folder):
    """Copy the project's files into ``folder`` as a clone would have them (mtimes kept)."""
    shutil.copytree(ROOT, folder, ignore=NOT_IN_A_CLONE)
    return Path(folder)


def clean_env(**settings):
    """An environment with the project's virtualenv first on PATH and only ``settings`` set."""
    env = {name: os.environ[name] for name in KEPT_VARIABLES if name in os.environ}
    env['PATH'] = f'{BIN}{os.pathsep}{os.environ.get("PATH", "/usr/bin:/bin")}'
    env['PYTHONDONTWRITEBYTECODE'] = '1'
    env.update({name: str(value) for name, value in settings.items()})
    return env


def run(folder, *command, timeout=120, **settings):
    """Run a command in ``folder`` with a clean environment; the finished process."""
    return subprocess.run(
        command,
        cwd=folder,
        env=clean_env(**settings),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def flask(folder, *args, **settings):
    """Run `flask ARGS` in ``folder`` as a newcomer would type it."""
    return run(folder, str(BIN / 'flask'), *args, **settings)
