"""The hub: one Redis subscription per web process, fanned out to the local subscribers.

A background thread pattern-subscribes to every account's live channel and hands each
packet to the subscriptions of that account in this process. Several processes and
instances each run their own hub, so an event published anywhere reaches every socket.
If the Redis connection drops, the hub reconnects and marks every subscription as
`resync`: the subscriber then reads what it missed from the account's stream (app/events.py).
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time

from redis.exceptions import RedisError

log = logging.getLogger(__name__)

PATTERN = "drive:events:*:live"


class Subscription:
    def __init__(self, hub: "EventHub", account_id: str):
        self.hub = hub
        self.account_id = account_id
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.resync = threading.Event()

    def get(self, timeout: float):
        """The next live packet (a dict), or None after `timeout` seconds."""
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.hub.unsubscribe(self)


class EventHub:
    def __init__(self, redis_factory):
        self.redis_factory = redis_factory
        self.lock = threading.Lock()
        self.subscriptions: dict[str, set[Subscription]] = {}
        self.ready = threading.Event()
        self.thread: threading.Thread | None = None

    def subscribe(self, account_id, timeout: float = 10.0) -> Subscription:
        """A subscription that receives every packet published from now on."""
        self._start()
        if not self.ready.wait(timeout):
            raise RedisError("the event hub is not connected to Redis")
        subscription = Subscription(self, str(account_id))
        with self.lock:
            self.subscriptions.setdefault(subscription.account_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self.lock:
            subs = self.subscriptions.get(subscription.account_id)
            if subs is not None:
                subs.discard(subscription)
                if not subs:
                    del self.subscriptions[subscription.account_id]

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
            except (RedisError, OSError):
                log.warning("event hub lost Redis; reconnecting", exc_info=True)
            # a hub that was connected starts its back-off again from the shortest delay
            delay = 0.1 if self.ready.is_set() else min(delay * 2, 5.0)
            self.ready.clear()
            time.sleep(delay)

    def _listen(self) -> None:
        pubsub = self.redis_factory().pubsub(ignore_subscribe_messages=False)
        try:
            pubsub.psubscribe(PATTERN)
            while True:
                message = pubsub.get_message(timeout=5.0)
                if message is None:
                    continue
                if message["type"] == "psubscribe":
                    self._mark_resync()  # anything published while we were away is in the streams
                    self.ready.set()
                    continue
                if message["type"] != "pmessage":
                    continue
                account = message["channel"].decode().split(":")[2]
                with self.lock:
                    targets = list(self.subscriptions.get(account, ()))
                if targets:
                    packet = json.loads(message["data"])
                    for subscription in targets:
                        subscription.queue.put(packet)
        finally:
            pubsub.close()

    def _mark_resync(self) -> None:
        with self.lock:
            for subs in self.subscriptions.values():
                for subscription in subs:
                    subscription.resync.set()
                    subscription.queue.put(None)  # wake the reader


_HUB_LOCK = threading.Lock()


def get_hub(app) -> EventHub:
    """The hub of this process (made on first use: after gunicorn forked its workers)."""
    with _HUB_LOCK:
        hub = app.extensions.get("drive.hub")
        if hub is None:
            from app.redis_client import get_redis  # noqa: PLC0415

            hub = app.extensions["drive.hub"] = EventHub(lambda: get_redis(app))
    return hub
