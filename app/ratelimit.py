"""Rate limits per route group, counted in the app's Redis (flask-limiter).

Each request belongs to one group, and each group has its own limit (`RATELIMIT_<GROUP>`, in
the syntax of `limits`: "600/minute", several joined by ";"; empty: not limited):

- `create`: POST /files/upload/create and POST /tasks (each reserves quota or queues work)
- `chunk`: chunk uploads, far higher (a file is thousands of them); one request counts one,
  whatever its size
- `write`: every other POST/PUT/PATCH/DELETE of the API (complete, cancel, delete, ...)
- `read`: GET routes of the API
- `live`: WebSocket and SSE connections opened

A group's counter is shared by its routes under /api and /drive, per key: the account of a
valid bearer token (header, or `?token=` as the live routes take it), else the client's IP
(`request.remote_addr`, which ProxyFix sets from X-Forwarded-For behind a trusted proxy).
Preflights, the health check and static assets are not limited.

Over a limit: 429 `RATE_LIMITED` in the error envelope, with `Retry-After` (seconds) and
`X-RateLimit-Limit/-Remaining/-Reset`. A refused chunk's body is read first (up to the largest
chunk), so the client keeps its keep-alive connection. Redis unreachable never fails a
request: flask-limiter then counts in each process's memory (logged once, as a warning, by
the `flask-limiter` logger) and goes back to Redis when it answers again.
"""
from __future__ import annotations

import functools
import math
import time

import redis
from flask import current_app, request
from flask_limiter import ApplicationLimit, Limiter, RateLimitExceeded
from limits import parse_many

from app.auth import request_account
from app.errors import envelope

GROUPS = ("create", "chunk", "write", "read", "live")
API_BLUEPRINTS = frozenset({"api", "drive"})
LIVE_BLUEPRINTS = frozenset({"live", "api_live", "drive_live"})
CREATE_ENDPOINTS = frozenset({"create_upload", "create_generic_task"})
READ_METHODS = frozenset({"GET", "HEAD"})
# A Redis that hangs costs a request at most this long before the limiter gives up on it.
REDIS_TIMEOUT_SECONDS = 1.0
CHUNK_DISCARD_SLACK = 1024 * 1024  # multipart framing around a refused chunk


def request_group() -> str | None:
    """The group of this request; None for what is not limited."""
    if request.method == "OPTIONS":
        return None
    if request.blueprint in LIVE_BLUEPRINTS:
        return "live"
    if request.blueprint not in API_BLUEPRINTS:
        return None
    endpoint = (request.endpoint or "").rsplit(".", 1)[-1]
    if endpoint == "upload_chunk":
        return "chunk"
    if endpoint in CREATE_ENDPOINTS:
        return "create"
    return "read" if request.method in READ_METHODS else "write"


def rate_limit_key() -> str:
    """Whose counter a request counts against: its account, else its client's address."""
    account = request_account()
    return f"account:{account}" if account else f"ip:{request.remote_addr or 'unknown'}"


def _other_group(group: str) -> bool:
    return request_group() != group


def _group_limit(app, group: str) -> ApplicationLimit | None:
    setting = f"RATELIMIT_{group.upper()}"
    value = (app.config[setting] or "").strip()
    if not value:
        return None
    try:
        parse_many(value)
    except ValueError as error:
        raise ValueError(f"{setting}={value!r} is not a rate limit such as '600/minute'") from error
    # one application-wide (shared) counter per group, applied only to that group's requests
    return ApplicationLimit(value, scope=group, exempt_when=functools.partial(_other_group, group))


def init_rate_limits(app) -> None:
    """Bind a limiter of this app's own (a Limiter's state belongs to one app) to its Redis."""
    if not app.config["RATELIMIT_ENABLED"]:
        return
    limits = [limit for limit in (_group_limit(app, group) for group in GROUPS) if limit is not None]
    pool = redis.ConnectionPool.from_url(app.config["REDIS_URL"], socket_timeout=REDIS_TIMEOUT_SECONDS,
                                         socket_connect_timeout=REDIS_TIMEOUT_SECONDS)
    prefix = app.config.get("QUEUE_PREFIX") or ""
    limiter = Limiter(
        rate_limit_key,
        application_limits=limits,
        storage_uri="redis://",
        storage_options={"connection_pool": pool, "key_prefix": f"{prefix}drive:ratelimit"},
        strategy=app.config["RATELIMIT_STRATEGY"],
        headers_enabled=False,  # its headers would put Retry-After on every answer: ours are on the 429
        swallow_errors=True,
        in_memory_fallback_enabled=True,
    )
    limiter.init_app(app)
    app.extensions["drive.limiter"] = limiter
    app.register_error_handler(RateLimitExceeded, too_many_requests)


def _reset_at(limiter: Limiter, error: RateLimitExceeded) -> float:
    """When the breached window ends (its length from now if the storage cannot say)."""
    try:
        return float(limiter.current_limit.window.reset_time)  # (RequestLimit.reset_at adds a second)
    except Exception:  # noqa: BLE001 - the storage went away since the hit
        return time.time() + error.limit.limit.get_expiry()


def _discard_chunk_body() -> None:
    """Read the refused chunk's body, so that gunicorn keeps the connection open (it closes
    one whose unread body is larger than it drains itself)."""
    from app.services.chunk_body import ChunkBody  # noqa: PLC0415 - the upload path's own reader

    body = ChunkBody(request.stream, request.content_type, request.content_length, None)
    body.discard_rest(current_app.config["UPLOAD_MAX_CHUNK_SIZE"] + CHUNK_DISCARD_SLACK)


def too_many_requests(error: RateLimitExceeded):
    """429 in the error envelope, with when to come back."""
    limiter = current_app.extensions["drive.limiter"]
    group = request_group()
    item = error.limit.limit
    reset_at = _reset_at(limiter, error)
    retry_after = max(1, math.ceil(reset_at - time.time()))
    if group == "chunk":
        _discard_chunk_body()
    return envelope(
        429, "RATE_LIMITED", f"Too many {group} requests (at most {item}); retry in {retry_after} s",
        {"group": group, "limit": str(item), "retryAfter": retry_after},
        {"Retry-After": str(retry_after), "X-RateLimit-Limit": str(item.amount), "X-RateLimit-Remaining": "0",
         "X-RateLimit-Reset": str(math.ceil(reset_at))},
    )
