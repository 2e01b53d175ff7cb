"""An account's events for one client connection: missed ones first, then live ones, each
exactly once and in id order.

The subscription is opened before the stream is read, so an event is either in what the
stream returned or arrives live afterwards (or both: duplicates are dropped by id). After
the hub lost Redis and came back, the stream is read again from the last id sent. A Redis
that restarted empty starts ids again from 1: that is noticed and followed.
"""
from __future__ import annotations

from app.events import keys_for, read_events
from app.live.hub import get_hub


def _current_id(redis, account_id) -> int:
    return int(redis.get(keys_for(account_id)[0]) or 0)


def account_packets(app, redis, account_id, since: int | None, idle: float) -> "PacketStream":
    """Subscribe now (so every event published after this call returns is delivered), and
    return a generator of packets that yields None when `idle` seconds pass without one
    (time for a heartbeat). Closing the generator ends the subscription."""
    subscription = get_hub(app).subscribe(account_id)
    try:
        current = _current_id(redis, account_id)
        if since is not None and since > current:  # Redis lost the history: ids restarted
            since = 0
        last = current if since is None else since
    except BaseException:
        subscription.close()
        raise
    return PacketStream(subscription, _packets(subscription, redis, account_id, since, last, idle))


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


def _packets(subscription, redis, account_id, since, last, idle):
    try:
        for packet in read_events(account_id, last, redis=redis) if since is not None else ():
            last = packet["id"]
            yield packet
        while True:
            packet = subscription.get(timeout=idle)
            if subscription.resync.is_set():
                subscription.resync.clear()
                if _current_id(redis, account_id) < last:  # Redis lost its data: ids restart
                    last = 0
                for missed in read_events(account_id, last, redis=redis):
                    last = missed["id"]
                    yield missed
                if packet is None:
                    continue
            if packet is None:
                yield None
                continue
            if packet["id"] <= last:
                continue
            last = packet["id"]
            yield packet
    finally:
        subscription.close()
