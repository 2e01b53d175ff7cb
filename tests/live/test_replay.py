"""Nothing is lost across a reconnect (app/live/stream.py, app/events.py): a client coming back
with ?since=N (or, in test_sse.py, Last-Event-ID) first receives what it missed, then live
events, with no gap and no duplicate, also while events keep coming and when the relay's own
Redis subscription drops or Redis lost the account's history.
"""
from __future__ import annotations

import websocket

from app.events import keys_for, publish_event
from tests.live.clients import Burst, drop, next_packet, open_socket, packets_until, stored_events


def test_since_replays_exactly_the_missed_events_then_live_ones(live_server, account, publish):
    ws = open_socket(live_server, account.token, account.id)
    seen = [publish(account.id, "test.event", n=n) for n in range(3)]
    assert [p["id"] for p in packets_until(ws, seen[-1])] == seen
    ws.close()

    missed = [publish(account.id, "test.event", n=n) for n in range(3, 9)]
    ws = open_socket(live_server, account.token, account.id, since=seen[-1])
    try:
        replayed = packets_until(ws, missed[-1])
        assert [p["id"] for p in replayed] == missed
        assert [p["data"]["n"] for p in replayed] == [3, 4, 5, 6, 7, 8]
        live = publish(account.id, "test.event", n=9)
        assert next_packet(ws)["id"] == live
    finally:
        ws.close()


def test_reconnecting_during_a_burst_loses_nothing_and_repeats_nothing(app, live_server, account, publish):
    """Four times: a burst of 150 events is published from another thread while the client
    reads part of it, leaves (closing, or vanishing without a close frame) and comes back with
    ?since=<the last id it read>. Across all connections it sees each id once, in order."""
    received: list[dict] = []
    ws = open_socket(live_server, account.token, account.id)
    try:
        for cycle_number, how in enumerate(("query", "message", "header", "message")):
            burst = Burst(app, account.id, 150)
            while len(received) < 150 * cycle_number + 40:
                received.append(next_packet(ws))
            if cycle_number % 2:
                drop(ws)
            else:
                ws.close()
            ws = open_socket(live_server, account.token, account.id, how=how, since=received[-1]["id"])
            burst.join()
        last = publish(account.id)
        received += packets_until(ws, last)
    finally:
        ws.close()
    assert [p["id"] for p in received] == list(range(1, last + 1))


def test_replay_covers_the_last_thousand_events_without_a_gap(app, live_server, account, publish):
    """1,300 events while away: the reconnecting client gets the retained tail (at least the
    last 1,000; Redis trims whole nodes, so a few more may remain) in order, up to the newest,
    and then live ones."""
    with app.app_context():
        ids = [publish_event(account.id, "test.event", {"n": n}) for n in range(1300)]
    assert ids == list(range(1, 1301))
    ws = open_socket(live_server, account.token, account.id, since=0)
    try:
        replayed = packets_until(ws, 1300)
        live = publish(account.id)
        assert next_packet(ws)["id"] == live
    finally:
        ws.close()
    ids = [p["id"] for p in replayed]
    assert 1000 <= len(ids) < 1300
    assert ids == list(range(1301 - len(ids), 1301))
    assert replayed == [p for p in stored_events(app, account.id) if p["id"] <= 1300]


# the relay and Redis ----------------------------------------------------------------------
def _kill_hub_connections(redis) -> int:
    """Cut the pattern subscriptions of the event hubs of this session (those on this Redis
    database number: other sessions sharing the server are left alone)."""
    db = int(redis.connection_pool.connection_kwargs.get("db") or 0)
    killed = 0
    for client in redis.client_list(_type="pubsub"):
        if int(client.get("psub", 0)) > 0 and int(client["db"]) == db:
            killed += redis.client_kill_filter(_id=client["id"])
    return killed


def test_the_relay_loses_nothing_when_its_redis_subscription_drops(app, live_server, account, publish, redis):
    """The hub's subscription is cut while events keep coming: the hub reconnects and the
    socket reads what it missed from the account's stream; each id once, in order."""
    ws = open_socket(live_server, account.token, account.id)
    try:
        first = [publish(account.id) for _ in range(3)]
        received = packets_until(ws, first[-1])
        assert _kill_hub_connections(redis) >= 1
        meanwhile = Burst(app, account.id, 60).join()
        received += packets_until(ws, meanwhile[-1])
        after = publish(account.id)
        received.append(next_packet(ws))
    finally:
        ws.close()
    assert [p["id"] for p in received] == list(range(1, after + 1))


def test_a_connected_socket_follows_the_new_ids_after_redis_lost_the_history(app, live_server, account, publish,
                                                                            redis):
    """Redis restarted empty (here: the account's keys are gone and the hub's subscription is
    cut): ids start again from 1, and the socket delivers them."""
    ws = open_socket(live_server, account.token, account.id)
    try:
        old = [publish(account.id) for _ in range(5)]
        assert [p["id"] for p in packets_until(ws, old[-1])] == old
        redis.delete(*keys_for(account.id)[:2])
        assert _kill_hub_connections(redis) >= 1
        new = [publish(account.id, "test.after", n=n) for n in range(3)]
        assert new == [1, 2, 3]
        got = [next_packet(ws) for _ in range(3)]
        assert [(p["id"], p["type"]) for p in got] == [(1, "test.after"), (2, "test.after"), (3, "test.after")]
    finally:
        ws.close()


def test_a_client_reconnecting_after_redis_lost_the_history_receives_the_new_events(live_server, account, publish,
                                                                                   redis):
    """The relay closes sockets with 1013 "reconnect with ?since=" when Redis fails. If Redis
    comes back empty, ids restart from 1: a client that reconnects with ?since=<its last id>
    must still receive the new events, not wait until the ids pass its old one."""
    ws = open_socket(live_server, account.token, account.id)
    old = [publish(account.id) for _ in range(5)]
    assert [p["id"] for p in packets_until(ws, old[-1])] == old
    ws.close()

    redis.delete(*keys_for(account.id)[:2])  # the account's history, as a Redis restarted without it
    ws = open_socket(live_server, account.token, account.id, since=old[-1], timeout=3)
    try:
        new = [publish(account.id, "test.after", n=n) for n in range(2)]
        assert new == [1, 2]
        try:
            got = [next_packet(ws) for _ in range(2)]
        except websocket.WebSocketTimeoutException:
            got = []
        assert [(p["id"], p["type"]) for p in got] == [(1, "test.after"), (2, "test.after")], \
            "the reconnected client received nothing: events with ids up to its old ?since are dropped"
    finally:
        ws.close()
