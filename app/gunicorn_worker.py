"""gunicorn's threaded worker with one fix, for processes that hold WebSockets.

With `--worker-connections` equal to `--threads`, a gthread process stops accepting when all
its threads are busy, so a new socket goes to a process with a free thread instead of
waiting. That needs the connection count to be right: when a handler closed its socket
itself (simple-websocket does, at the end of a WebSocket), gunicorn 27's finish_request
counts the connection out twice (once before close(), once more when close() fails on the
closed socket), and the process then takes more connections than it has threads.
"""
from __future__ import annotations

from gunicorn.workers.gthread import ThreadWorker


class DriveThreadWorker(ThreadWorker):
    def finish_request(self, conn, fs):
        before = self.nr_conns
        super().finish_request(conn, fs)
        self.nr_conns = max(self.nr_conns, before - 1)  # a connection ends once
