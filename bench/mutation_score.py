"""Print the mutation score of each mutated module, from the results of `mutmut run`.

Killed: a test failed (or the mutant timed out, or crashed at import). Survived: every
test that runs the function passed. No tests: no test runs the function at all, which
counts against the score like a survivor.
"""

import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

BIN = Path(sys.executable).parent
DETECTED = {'killed', 'timeout', 'segfault', 'caught by type check'}
NOT_RUN = {'not checked', 'skipped', 'check was interrupted by user'}


def results():
    """Each mutant's name and status, as `mutmut results --all true` prints them."""
    output = subprocess.run(
        [BIN / 'mutmut', 'results', '--all', 'true'], capture_output=True, text=True, check=True
    ).stdout
    for line in output.splitlines():
        name, _, status = line.strip().rpartition(': ')
        if name:
            yield name, status


def main():
    by_module = defaultdict(Counter)
    survivors = defaultdict(list)
    for name, status in results():
        module = re.match(r'(.+?)\.x[_ǁ]', name)[1]
        by_module[module][status] += 1
        if status not in DETECTED | NOT_RUN:
            survivors[module].append(f'{name} ({status})')
    print(f'{"module":<24} {"killed":>7} {"total":>6} {"score":>6}   not run')
    for module, counts in sorted(by_module.items()):
        killed = sum(counts[status] for status in DETECTED)
        total = sum(counts.values()) - sum(counts[status] for status in NOT_RUN)
        score = f'{100 * killed / total:.0f} %' if total else '-'
        not_run = sum(counts[status] for status in NOT_RUN)
        print(f'{module:<24} {killed:>7} {total:>6} {score:>6}   {not_run}')
    if '--survivors' in sys.argv:
        for module, names in sorted(survivors.items()):
            print(f'\n{module}:')
            print('\n'.join(f'  {name}' for name in names))


if __name__ == '__main__':
    main()
