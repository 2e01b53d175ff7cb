"""An account's events for one client connection: missed ones first, then live ones, each
exactly once and in id order.

The subscription is opened before the stream is read, so an event is either in what the
stream returned or arrives live afterwards (or both: duplicates are dropped by id). Live
packets come through the subscription's queue, or, for a WebSocket whose thread waits, are
written to it by the hub itself; either way `last_id` keeps one order. After
the hub lost Redis and came back, the stream is read again from the last id sent. A Redis
that restarted empty starts ids again from 1: that is noticed (its epoch token changed) and
followed, from the first event it kept.
"""
from __future__ import annotations

import secrets

from app.events import keys_for, read_events
from app.live.hub import get_hub

EPOCH_KEY = "drive:events:epoch"


def _current_id(redis, account_id) -> int:
    return int(redis.get(keys_for(account_id)[0]) or 0)


def _epoch(redis) -> bytes:
    """A token of Redis's current data, set by the first reader and lost with the data: a new
    token means ids started again from 1, even when as many events as before (or more) were
    published since, which comparing ids cannot tell."""
    redis.set(EPOCH_KEY, secrets.token_hex(8), nx=True)
    return redis.get(EPOCH_KEY)


def account_packets(app, redis, account_id, since: int | None, idle: float) -> "PacketStream":
    """Subscribe now (so every event published after this call returns is delivered), and
    return a generator of packets that yields None when `idle` seconds pass without one
    (time for a heartbeat). Closing the generator ends the subscription."""
    subscription = get_hub(app).subscribe(account_id)
    try:
        epoch = _epoch(redis)
        current = _current_id(redis, account_id)
        if since is not None and since > current:  # Redis lost the history: ids restarted
            since = 0
        last = current if since is None else since
    except BaseException:
        subscription.close()
        raise
    return PacketStream(subscription, _packets(subscription, redis, account_id, since, last, idle, epoch))


class PacketStream:
    """Iterate for packets; `close()` ends the subscription even if iteration never began."""

    def __init__(self, subscription, generator):
        self.subscription = subscription
        self.generator = generator

    def __iter__(self):
        return self.generator

    def close(self) -> None:
        self.generator.close()
        self.subscription.close()


def _packets(subscription, redis, account_id, since, last, idle, epoch):
    """`subscription.last_id` is the newest id the client has: this generator sets it for
    each packet it yields, the hub for each it writes to a WebSocket itself (app/live/hub.py)."""
    subscription.last_id = last
    try:
        for packet in read_events(account_id, last, redis=redis) if since is not None else ():
            subscription.last_id = packet["id"]
            yield packet
        while True:
            packet = subscription.get(timeout=idle)
            if subscription.resync.is_set():
                subscription.resync.clear()
                now = _epoch(redis)
                if now != epoch or _current_id(redis, account_id) < subscription.last_id:
                    epoch, subscription.last_id = now, 0  # Redis lost its data: ids restarted
                for missed in read_events(account_id, subscription.last_id, redis=redis):
                    subscription.last_id = missed["id"]
                    yield missed
                if packet is None:
                    continue
            if packet is None:
                yield None
                continue
            if packet["id"] <= subscription.last_id:
                continue
            subscription.last_id = packet["id"]
            yield packet
    finally:
        subscription.close()
