"""gunicorn settings for bench/profile_pages.py: pyinstrument on the worker, under load.

The profile starts after WARM_UP requests (imports, compiled templates, the first
connections are behind it) and is saved when the worker exits, with the count of
requests it covers beside it.
"""

import os
from pathlib import Path

WARM_UP = 30
_state = {'requests': 0, 'profiler': None}


def pre_request(worker, req):
    _state['requests'] += 1
    if _state['requests'] == WARM_UP:
        from pyinstrument import Profiler

        _state['profiler'] = Profiler(interval=0.001)
        _state['profiler'].start()


def worker_exit(server, worker):
    profiler = _state['profiler']
    if profiler is None:
        return
    out = Path(os.environ['PROFILE_OUT'])
    profiler.stop().save(out)
    out.with_suffix('.requests').write_text(str(_state['requests'] - WARM_UP))
