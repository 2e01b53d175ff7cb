"""The hub: one Redis subscription per web process, fanned out to the local subscribers.

A background thread pattern-subscribes to every account's live channel and hands each
packet to the subscriptions of that account in this process. Several processes and
instances each run their own hub, so an event published anywhere reaches every socket.
If the Redis connection drops, the hub reconnects and marks every subscription as
`resync`: the subscriber then reads what it missed from the account's stream (app/events.py).

Delivery to a WebSocket is direct when it can be: while the socket's own thread waits with
nothing queued, the hub thread writes the packet's frame to the socket itself (one
non-blocking write of bytes made once per event), instead of waking that thread, which
would have to win the GIL back from the upload threads to send the same bytes (the
difference is large under load; see bench/event_latency.py). Anything that does not fit
that case goes through the subscription's queue as before: a replay or resync in progress,
packets already queued (order), a send buffer that is not empty (a slow client), SSE.

The same subscription also carries the end of uploads (`drive:upload-done:*`, announced by
jobs/finalize.py) to the completes waiting in this process (app/services/completion.py),
so a waiting request costs no Redis connection of its own.
"""
from __future__ import annotations

import array
import contextlib
import fcntl
import json
import logging
import queue
import socket
import termios
import threading
import time

from redis.exceptions import RedisError

log = logging.getLogger(__name__)

PATTERN = "drive:events:*:live"
DONE_PATTERN = "drive:upload-done:*"


def websocket_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented text frame (RFC 6455 5.2), as a server sends it. Valid with
    permessage-deflate negotiated too: RSV1 clear marks an uncompressed message."""
    size = len(payload)
    if size < 126:
        head = bytes((0x81, size))
    elif size < 65536:
        head = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x81, 127)) + size.to_bytes(8, "big")
    return head + payload


class Subscription:
    def __init__(self, hub: "EventHub", account_id: str):
        self.hub = hub
        self.account_id = account_id
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.resync = threading.Event()
        self.last_id = 0          # the newest packet id handed to the client (by either path)
        self.lock = threading.Lock()
        self.socket = None        # set by attach_socket: direct delivery allowed
        self.room = 0             # bytes a direct write may leave in its send buffer
        self.direct = False       # the socket's thread is waiting and nothing is queued

    def attach_socket(self, sock) -> None:
        """Let the hub write packets to this (WebSocket) socket while its thread waits. The
        socket must be in timeout mode (its descriptor is non-blocking then)."""
        if sock.gettimeout() is not None:
            self.room = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // 4
            self.socket = sock

    def get(self, timeout: float):
        """The next queued packet (a dict), or None after `timeout` seconds. While this
        waits with an empty queue, the hub may deliver to the socket directly."""
        with self.lock:
            if self.socket is not None and not self.resync.is_set() and self.queue.empty():
                self.direct = True
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def deliver(self, packet: dict, frame: bytes | None) -> None:
        """From the hub thread: write `frame` to the socket if the direct path is open and
        the kernel takes all of it at once; else queue the packet for the socket's thread."""
        with self.lock:
            if self.direct:
                if frame is not None:
                    if packet["id"] <= self.last_id:
                        return  # already replayed to the client
                    if self._write(frame):
                        self.last_id = packet["id"]
                        return
                # queued from now on, until the thread has drained it: one writer at a time
                self.direct = False
            self.queue.put(packet)

    def _write(self, frame: bytes) -> bool:
        """One non-blocking write of the whole frame, only when the send buffer has ample
        room (a quarter of its initial size free): then the kernel takes all of it at once,
        so a frame is never split. A slow client is served by its own thread instead."""
        sock = self.socket
        try:
            if _unsent(sock) + len(frame) > self.room:
                return False
            # through the socket object, not its fd number: once the reader thread has closed
            # it, send fails instead of writing to whatever connection took that number since
            written = sock.send(frame, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:  # the connection failed: its thread finds out on its next send
            self.socket = None
            return False
        if written != len(frame):  # cannot happen with that room; the stream would be corrupt
            self.socket = None
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # the client reconnects with ?since=
        return True

    def mark_resync(self) -> None:
        with self.lock:
            self.direct = False
            self.resync.set()
        self.queue.put(None)  # wake the reader

    def close(self) -> None:
        with self.lock:
            self.direct = False
            self.socket = None
        self.hub.unsubscribe(self)


def _unsent(sock) -> int:
    """Bytes in the socket's send queue (SIOCOUTQ: not yet acknowledged by the peer)."""
    out = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, out)
    return out[0]


class Waiter:
    """One complete waiting for the end of an upload: `event` is set when it is announced."""

    def __init__(self, hub: "EventHub", channel: str):
        self.hub = hub
        self.channel = channel
        self.event = threading.Event()

    def wait(self, timeout: float) -> bool:
        """True when announced within `timeout` s; the next wait waits for another message
        (the caller re-reads its state after each wait, so none is missed)."""
        announced = self.event.wait(timeout)
        self.event.clear()
        return announced

    def close(self) -> None:
        self.hub.unwatch(self)


class EventHub:
    def __init__(self, redis_factory):
        self.redis_factory = redis_factory
        self.lock = threading.Lock()
        self.subscriptions: dict[str, set[Subscription]] = {}
        self.waiters: dict[str, set[Waiter]] = {}
        self.ready = threading.Event()
        self.thread: threading.Thread | None = None

    def subscribe(self, account_id, timeout: float = 10.0) -> Subscription:
        """A subscription that receives every packet published from now on."""
        self._start()
        if not self.ready.wait(timeout):
            raise RedisError("the event hub is not connected to Redis")
        subscription = Subscription(self, str(account_id))
        self._add(self.subscriptions, subscription.account_id, subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._remove(self.subscriptions, subscription.account_id, subscription)

    def watch(self, channel: str, timeout: float = 1.0) -> Waiter:
        """A waiter for the messages on `channel` (under DONE_PATTERN), from now on once the
        hub is connected (waited for up to `timeout` s, the first time in a process); a
        caller re-reads its state on a timer too, for a hub without Redis."""
        self._start()
        waiter = Waiter(self, channel)
        self._add(self.waiters, channel, waiter)
        self.ready.wait(timeout)
        return waiter

    def unwatch(self, waiter: Waiter) -> None:
        self._remove(self.waiters, waiter.channel, waiter)

    def _add(self, registry: dict, key: str, item) -> None:
        with self.lock:
            registry.setdefault(key, set()).add(item)

    def _remove(self, registry: dict, key: str, item) -> None:
        with self.lock:
            items = registry.get(key)
            if items is not None:
                items.discard(item)
                if not items:
                    del registry[key]

    def count(self) -> int:
        with self.lock:
            return sum(len(s) for s in self.subscriptions.values())

    def _start(self) -> None:
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="drive-event-hub", daemon=True)
                self.thread.start()

    def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                self._listen()
            except (RedisError, OSError) as error:
                # one line when a connected hub loses Redis, not a traceback per retry
                (log.warning if self.ready.is_set() else log.debug)(
                    "event hub: Redis unavailable (%s: %s); reconnecting", type(error).__name__, error)
            # a hub that was connected starts its back-off again from the shortest delay
            delay = 0.1 if self.ready.is_set() else min(delay * 2, 5.0)
            self.ready.clear()
            time.sleep(delay)

    def _listen(self) -> None:
        pubsub = self.redis_factory().pubsub(ignore_subscribe_messages=False)
        try:
            # one command: when its first confirmation arrives, both patterns are active
            pubsub.psubscribe(PATTERN, DONE_PATTERN)
            while True:
                message = pubsub.get_message(timeout=5.0)
                if message is None:
                    continue
                if message["type"] == "psubscribe":  # its "channel" is the pattern
                    if message["channel"] == PATTERN.encode():
                        self._mark_resync()  # anything published while we were away is in the streams
                        self.ready.set()
                    continue
                if message["type"] != "pmessage":
                    continue
                if message["pattern"] == DONE_PATTERN.encode():
                    self._announce(message["channel"].decode())
                else:
                    self._dispatch(message["channel"], message["data"])
        finally:
            pubsub.close()

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        account = channel.decode().split(":")[2]
        with self.lock:
            targets = list(self.subscriptions.get(account, ()))
        if not targets:
            return
        packet = json.loads(data)
        # the packet's JSON as published (app/events.py builds it compact) is the frame's text
        frame = websocket_frame(data) if any(s.socket is not None for s in targets) else None
        for subscription in targets:
            subscription.deliver(packet, frame)

    def _announce(self, channel: str) -> None:
        with self.lock:
            waiters = list(self.waiters.get(channel, ()))
        for waiter in waiters:
            waiter.event.set()

    def _mark_resync(self) -> None:
        with self.lock:
            subscriptions = [s for subs in self.subscriptions.values() for s in subs]
        for subscription in subscriptions:
            subscription.mark_resync()


_HUB_LOCK = threading.Lock()


def get_hub(app) -> EventHub:
    """The hub of this process (made on first use: after gunicorn forked its workers)."""
    with _HUB_LOCK:
        hub = app.extensions.get("drive.hub")
        if hub is None:
            from app.redis_client import get_redis  # noqa: PLC0415

            hub = app.extensions["drive.hub"] = EventHub(lambda: get_redis(app))
    return hub
