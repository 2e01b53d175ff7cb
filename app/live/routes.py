"""GET /ws (also /api/ws, /drive/ws): the account's events over a WebSocket.
GET /api/events (also /drive/events): the same packets as server-sent events.

A client authenticates with `Authorization: Bearer`, a `token` query parameter, or (on the
WebSocket, as the seed's client does) a first message `{"type": "auth", "token": "..."}`.
`?since=N` (WebSocket) or `Last-Event-ID` (SSE) first replays the events after id N.
"""
from __future__ import annotations

import json
import logging
import threading

from flask import Blueprint, current_app, request
from redis.exceptions import RedisError
from simple_websocket import ConnectionClosed

from app import metrics
from app.auth import decode_token
from app.errors import ApiError, BadRequest, ServiceUnavailable, Unauthorized
from app.extensions import sock
from app.live.stream import account_packets
from app.redis_client import get_redis

log = logging.getLogger(__name__)

live = Blueprint("live", __name__)

CLOSE_UNAUTHORIZED = 4401  # private-use close codes (RFC 6455 7.4.2)
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAVAILABLE = 1013  # try again later


def _token_from_request() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.args.get("token") or None


def _since(raw: str | None) -> int | None:
    if raw in (None, ""):
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise BadRequest("since / Last-Event-ID must be an event id", code="INVALID_EVENT_ID")
    return int(raw)


def _socket_account(ws):
    """The account of the socket, from the request or from a first auth message."""
    token = _token_from_request()
    if token is None:
        timeout = current_app.config["LIVE_AUTH_TIMEOUT_SECONDS"]
        message = ws.receive(timeout=timeout)
        if message is None:
            raise Unauthorized(f"Send {{\"type\": \"auth\", \"token\": ...}} within {timeout} s")
        try:
            packet = json.loads(message)
        except (TypeError, ValueError):
            packet = None
        if not isinstance(packet, dict) or packet.get("type") != "auth" or not isinstance(packet.get("token"), str):
            raise Unauthorized('The first message must be {"type": "auth", "token": "..."}')
        token = packet["token"]
    return decode_token(token)[0]


class _WakeEvent(threading.Event):
    """simple-websocket's message/close signal, also waking the socket's packet loop."""

    def __init__(self, queue):
        super().__init__()
        self.queue = queue

    def set(self):
        super().set()
        self.queue.put(None)


@sock.route("/ws", bp=live)
def websocket(ws):
    try:
        account_id = _socket_account(ws)
        since = _since(request.args.get("since"))
    except Unauthorized as error:
        ws.close(CLOSE_UNAUTHORIZED, f"{error.code}: {error.message}"[:120])
        return
    except ApiError as error:
        ws.close(CLOSE_BAD_REQUEST, f"{error.code}: {error.message}"[:120])
        return
    app = current_app._get_current_object()
    idle = app.config["LIVE_IDLE_CHECK_SECONDS"]
    try:
        packets = account_packets(app, get_redis(app), account_id, since, idle)
    except Exception:  # noqa: BLE001 - Redis unreachable
        log.warning("event relay unavailable for %s", account_id, exc_info=True)
        ws.close(CLOSE_UNAVAILABLE, "events unavailable; reconnect later")
        return
    # Wake this thread at once when the client sends something or goes away (simple-websocket
    # sets `ws.event` then), instead of finding out at the next idle check.
    ws.event = _WakeEvent(packets.subscription.queue)
    ws.sock.settimeout(app.config["LIVE_SEND_TIMEOUT_SECONDS"])  # a client that stops reading
    metrics.live_connection_opened("websocket")
    try:
        # subscribed: every event published from now on will be delivered
        ws.send(json.dumps({"type": "auth.ok", "data": {"accountId": str(account_id)}}))
        packets.subscription.attach_socket(ws.sock)  # while this thread waits, the hub writes
        for packet in packets:
            if not ws.connected:  # the client left (or missed its pongs): free the thread
                break
            if ws.input_buffer:  # nothing is expected from the client after auth: drop it
                ws.input_buffer.clear()
            if packet is not None:
                ws.send(json.dumps(packet, separators=(",", ":")))
    except ConnectionClosed:
        pass
    except Exception:  # noqa: BLE001 - Redis gone: tell the client to come back later
        log.warning("event relay failed for %s", account_id, exc_info=True)
        ws.close(CLOSE_UNAVAILABLE, "events unavailable; reconnect with ?since=")
    finally:
        packets.close()
        metrics.live_connection_closed("websocket")


@live.get("/events")
def server_sent_events():
    token = _token_from_request()
    if token is None:
        raise Unauthorized("Send 'Authorization: Bearer <token>' or ?token=",
                           headers={"WWW-Authenticate": 'Bearer realm="drive"'})
    account_id = decode_token(token)[0]
    since = _since(request.headers.get("Last-Event-ID") or request.args.get("since"))
    app = current_app._get_current_object()
    try:
        packets = account_packets(app, get_redis(app), account_id, since, app.config["LIVE_SSE_KEEPALIVE_SECONDS"])
    except RedisError as error:
        raise ServiceUnavailable("Live events are unavailable; reconnect later", code="EVENTS_UNAVAILABLE",
                                 headers={"Retry-After": "5"}) from error

    def body():
        metrics.live_connection_opened("sse")  # here: the finally below runs only once body() started
        try:
            yield "retry: 3000\n: connected\n\n"
            for packet in packets:
                if packet is None:
                    yield ": keep-alive\n\n"
                else:
                    yield f"id: {packet['id']}\ndata: {json.dumps(packet, separators=(',', ':'))}\n\n"
        finally:
            packets.close()
            metrics.live_connection_closed("sse")

    return current_app.response_class(body(), mimetype="text/event-stream", headers={
        "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
