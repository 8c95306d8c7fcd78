"""A Redis server of the test's own, on a free port, that a test may stop mid-run."""

import shutil
import subprocess

from tests.mailserver import free_port


class RedisServer:
    """`redis-server` on 127.0.0.1, in memory only; started and stopped by its PID."""

    def __init__(self):
        self.port = free_port()
        self.process = None

    @property
    def url(self):
        return f'redis://127.0.0.1:{self.port}/0'

    def start(self):
        """Start it and return once it says it accepts connections (or fail with its output)."""
        self.process = subprocess.Popen(
            [
                shutil.which('redis-server'),
                '--port',
                str(self.port),
                '--bind',
                '127.0.0.1',
                '--save',
                '',
                '--appendonly',
                'no',
                '--daemonize',
                'no',
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        seen = []
        for line in self.process.stdout:  # ends when the process does
            seen.append(line)
            if 'Ready to accept connections' in line:
                return self
        raise RuntimeError('redis-server did not start:\n' + ''.join(seen))

    def stop(self):
        """Stop it (SIGTERM to its PID) and wait for it to exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        if self.process is not None:
            self.process.stdout.close()
            self.process = None


def redis_server_missing():
    """Why a test of its own Redis cannot run here, or None."""
    return None if shutil.which('redis-server') else 'redis-server is not installed'
