"""gunicorn's threaded worker with two additions: a connection count that stays right for
processes that hold WebSockets, and a graceful stop that leaves no half-received chunk behind.

With `--worker-connections` equal to `--threads`, a gthread process stops accepting when all
its threads are busy, so a new socket goes to a process with a free thread instead of
waiting. That needs the connection count to be right: when a handler closed its socket
itself (simple-websocket does, at the end of a WebSocket), gunicorn 27's finish_request
counts the connection out twice (once before close(), once more when close() fails on the
closed socket), and the process then takes more connections than it has threads.

On SIGTERM gthread stops accepting and lets the requests in flight finish, for at most
`--graceful-timeout`; then the master SIGKILLs the process, and a chunk still streaming in
would leave its temporary file behind. So, CUT_MARGIN seconds before that, the read side of
every connection still being served is shut: a chunk body still arriving ends early, and its
handler removes what it wrote (as for any dropped connection) while the process can still
finish. A client that keeps sending at a normal pace gets its chunk stored; one that is cut
sees its connection close and sends that chunk again after a restart (GET /resume lists it).
"""
from __future__ import annotations

import socket
import threading

from gunicorn.workers.gthread import ThreadWorker

CUT_MARGIN = 1.0  # seconds between cutting what is still in flight and the master's SIGKILL


class DriveThreadWorker(ThreadWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.in_flight = set()  # connections a thread is serving; changed on the main thread only
        self.cut_timer = None

    def enqueue_req(self, conn):
        self.in_flight.add(conn)
        super().enqueue_req(conn)

    def finish_request(self, conn, fs):
        self.in_flight.discard(conn)
        before = self.nr_conns
        super().finish_request(conn, fs)
        self.nr_conns = max(self.nr_conns, before - 1)  # a connection ends once

    def handle_exit(self, sig, frame):
        if self.alive:
            grace = self.cfg.graceful_timeout
            cut_after = max(grace - CUT_MARGIN, grace / 2)
            # the cut itself runs on the main thread, which owns `in_flight`
            self.cut_timer = threading.Timer(cut_after, self.method_queue.defer, (self.cut_in_flight,))
            self.cut_timer.daemon = True
            self.cut_timer.start()
            self.log.info("Stopping gracefully: %d request(s) in flight; any still running in %.1f s is cut",
                          len(self.in_flight), cut_after)
        super().handle_exit(sig, frame)

    def cut_in_flight(self):
        """Shut the read side of every connection still being served: a blocked body read
        returns at once with what it has, so the request fails the way a dropped connection
        does, instead of being killed half-way."""
        for conn in list(self.in_flight):
            try:
                conn.sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass  # closed meanwhile

    def run(self):
        try:
            super().run()
        finally:
            if self.cut_timer is not None:
                self.cut_timer.cancel()  # the method queue is closed now
