"""Publishing live events, per account, into Redis.

Each event gets an id that increases per account, is appended to the account's stream
(`drive:events:{account}`: the last EVENT_HISTORY entries of at most the last 24 hours, for
replay after a reconnect) and
is announced on the account's channel for relays that listen live. One Lua script does all
three, so ids and stream order never disagree. Callers publish only after their transaction
committed (invariant 4); a failure to publish is logged and never undoes the change.
A published `upload.completed`, `upload.failed`, `task.completed` or `task.failed` is also
handed to Web Push (app/services/push.py enqueues jobs/push.py); that too never fails a publish.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from redis.exceptions import RedisError

from app.audit import audit_event
from app.redis_client import get_redis

log = logging.getLogger(__name__)

EVENT_HISTORY = 1000

EVENT_HISTORY_MS = 24 * 3600 * 1000  # and at most a day of them

_PUBLISH = """
local id = redis.call('INCR', KEYS[1])
local packet = '{"id":' .. id .. ',"type":' .. cjson.encode(ARGV[1]) .. ',"data":' .. ARGV[2] .. '}'
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'id', id, 'packet', packet)
local now = redis.call('TIME')
local oldest = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[4])
redis.call('XTRIM', KEYS[2], 'MINID', oldest)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', KEYS[3], packet)
return id
"""


def _script(redis):
    """The publish script, registered once per client (it is loaded by its SHA)."""
    script = getattr(redis, "_drive_publish", None)
    if script is None:
        script = redis.register_script(_PUBLISH)
        redis._drive_publish = script
    return script


def keys_for(account_id) -> tuple[str, str, str]:
    account = str(account_id)
    return (f"drive:events:{account}:seq", f"drive:events:{account}", f"drive:events:{account}:live")


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a `Z`, as every timestamp on the wire."""
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def publish_event(account_id, event_type: str, data: dict, redis=None) -> int | None:
    """Publish `{"id", "type", "data"}` to the account; returns the id, None if Redis failed.
    Outside a request it is also the change's audit line (app/audit.py), Redis or not."""
    audit_event(account_id, event_type, data)
    redis = redis or get_redis()
    try:
        event_id = int(_script(redis)(keys=keys_for(account_id),
                              args=[event_type, json.dumps(data, separators=(",", ":")), EVENT_HISTORY,
                                    EVENT_HISTORY_MS]))
    except RedisError:
        log.warning("could not publish %s for account %s", event_type, account_id, exc_info=True)
        return None
    _push(account_id, {"id": event_id, "type": event_type, "data": data})
    return event_id


def _push(account_id, packet: dict) -> None:
    """Hand the event to Web Push (app/services/push.py decides which types and enqueues the
    job). A failure here is logged and never undoes or fails the publish."""
    try:
        from app.services.push import after_publish  # noqa: PLC0415 - services import this module

        after_publish(account_id, packet)
    except Exception:  # noqa: BLE001
        log.warning("could not enqueue the web push of %s #%s for account %s", packet["type"], packet["id"],
                    account_id, exc_info=True)


def read_events(account_id, since: int = 0, redis=None) -> list[dict]:
    """The stored events of an account with an id above `since`, oldest first."""
    redis = redis or get_redis()
    out = []
    for _, fields in redis.xrange(keys_for(account_id)[1]):
        if int(fields[b"id"]) > since:
            out.append(json.loads(fields[b"packet"]))
    return out
