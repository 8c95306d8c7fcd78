"""The lock files are made from the .in files: a dependency added without `make lock` fails here."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r'^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;#]+)')


def normalised(name):
    return re.sub(r'[-_.]+', '-', name).lower()


def requirement_lines(path):
    for line in (ROOT / path).read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line and not line.startswith('-'):
            yield line


def pins(path):
    """The name and version of each requirement in a lock file, by normalised name."""
    found = {}
    for line in requirement_lines(path):
        match = PIN.match(line)
        assert match, f'{path}: {line!r} is not pinned with =='
        found[normalised(match[1])] = match[2]
    return found


@pytest.mark.parametrize(
    ('source', 'lock'),
    [('requirements.in', 'requirements.txt'), ('requirements-dev.in', 'requirements-dev.txt')],
)
def test_every_dependency_of_the_source_is_in_its_lock_at_its_version(source, lock):
    locked = pins(lock)
    for line in requirement_lines(source):
        match = PIN.match(line)
        assert match, f'{source}: pin {line!r} with == (the lock holds the exact versions)'
        name, version = normalised(match[1]), match[2]
        assert locked.get(name) == version, f'{name}=={version} is not in {lock}: run make lock'


def test_the_development_lock_installs_the_runtime_lock():
    runtime, development = pins('requirements.txt'), pins('requirements-dev.txt')
    assert {name: development.get(name) for name in runtime} == runtime
