"""The audit log: one JSON line per state change, on the logger `drive.audit`.

- **Web**: an after_request hook writes a line for every mutating request of the API (POST,
  PUT, PATCH, DELETE under /api or /drive), accepted or refused: the action (named after the
  route), the account (of a valid token, even when the request was refused before its route
  authenticated it), the ids in the URL and those the answer created, the outcome
  (`ok` < 400 ≤ `refused` < 500 ≤ `error`), the status, the error code, the request id and the
  client's IP. A stored chunk is no line (a file is thousands of them; AUDIT_LOG_CHUNKS turns
  them on); a refused one is.
- **Workers** (and the CLI): every event published outside a request, progress aside, is a
  line (`upload.completed`, `upload.failed`, `task.completed`, ...): app/events.py calls
  `audit_event` as it publishes, which is after the change committed.
- **CLI** commands that change pools, quotas or tokens call `record` themselves.

AUDIT_LOG_PATH empty: lines go to stderr; else they are appended to that file (by every
process; a line is one write, and the file is reopened when logrotate moves it). Writing a line
never fails a request or a job.
"""
from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import threading
from datetime import datetime, timezone

from flask import current_app, g, has_app_context, has_request_context, request

from app.auth import request_account
from app.schemas.base import camelcase

log = logging.getLogger(__name__)

LOGGER_NAME = "drive.audit"
MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
API_BLUEPRINTS = frozenset({"api", "drive"})
MAX_VALUE_LENGTH = 200  # of an id taken from a URL: anything can be sent there
MAX_LIST_IDS = 100

# endpoint → (action, {path in the JSON answer: id name}); a route missing here is logged
# under its endpoint's name (tests/api/test_audit.py checks that none is missing)
ACTIONS = {
    "create_upload": ("upload.create", {"taskId": "taskId", "file.id": "fileId"}),
    "upload_chunk": ("upload.chunk", {}),
    "complete_upload": ("upload.complete", {"id": "fileId"}),
    "cancel_task": ("upload.cancel", {}),
    "cleanup_tasks": ("upload.cleanup", {"taskIds": "taskIds"}),
    "delete_file": ("file.delete", {}),
    "create_bundle": ("bundle.create", {"id": "bundleId"}),
    "create_subscription": ("push.subscribe", {"id": "subscriptionId"}),
    "delete_subscription": ("push.unsubscribe", {}),
    "delete_subscription_by_endpoint": ("push.unsubscribe", {}),
    "create_generic_task": ("task.create", {"taskId": "taskId"}),
    "pause_generic_task": ("task.pause", {}),
    "resume_generic_task": ("task.resume", {}),
    "cancel_generic_task": ("task.cancel", {}),
    "delete_generic_task": ("task.delete", {}),
}


class _StderrHandler(logging.StreamHandler):
    """Writes to the process's own stderr (file descriptor 2), not to whatever `sys.stderr`
    is at the moment: a CLI command's output (click's runner swaps sys.stderr and mixes it
    into what a command prints) must stay only what the command prints."""

    @property
    def stream(self):
        return sys.__stderr__ or sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


_setup_lock = threading.Lock()


def audit_logger(path: str) -> logging.Logger:
    """`drive.audit` (stderr), or a child of it per file: apps of one process may each write
    to their own file (tests do), and a line goes to one place only."""
    logger = logging.getLogger(f"{LOGGER_NAME}.file:{path}" if path else LOGGER_NAME)
    with _setup_lock:
        if not logger.handlers:
            handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8") if path else _StderrHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)  # audit lines do not depend on LOG_LEVEL
            logger.propagate = False
    return logger


def init_audit(app) -> None:
    app.extensions["drive.audit"] = audit_logger(app.config.get("AUDIT_LOG_PATH") or "")
    app.after_request(_audit_response)


def _source() -> str:
    if has_request_context():
        return "web"
    from rq import get_current_job  # noqa: PLC0415

    return "worker" if get_current_job() is not None else "cli"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record(action: str, *, outcome: str = "ok", account=None, ids: dict | None = None, **fields) -> None:
    """Write one line. Outside a request the caller names the account; in one, the request id
    and the client's IP are added."""
    line = {"ts": _now(), "action": action, "outcome": outcome, "account": str(account) if account else None,
            "ids": ids or {}}
    line.update(fields)
    line["source"] = _source()
    if has_request_context():
        line["requestId"] = g.get("request_id")
        line["ip"] = request.remote_addr
    current_app.extensions["drive.audit"].info(json.dumps(line, default=str, separators=(",", ":")))


def _clip(value):
    if isinstance(value, str):
        return value[:MAX_VALUE_LENGTH]
    if isinstance(value, list):
        return [_clip(item) for item in value[:MAX_LIST_IDS]]
    return value


def _dig(payload, path: str):
    """payload["file"]["id"] for "file.id"; None where the answer has no such value."""
    for part in path.split("."):
        payload = payload.get(part) if isinstance(payload, dict) else None
    return payload


def _request_ids(endpoint: str, response) -> dict:
    """The ids in the URL, then those the answer names (a created task, file, bundle, ...)."""
    ids = {camelcase(name): _clip(value) for name, value in (request.view_args or {}).items()}
    paths = ACTIONS.get(endpoint, (None, {}))[1]
    if paths and response.status_code < 400 and response.is_json and not response.is_streamed:
        payload = response.get_json(silent=True)
        for path, name in paths.items():
            value = _dig(payload, path)
            if value is not None:
                ids[name] = _clip(value)
    return ids


def _outcome(status: int) -> str:
    return "ok" if status < 400 else "refused" if status < 500 else "error"


def _error_code(response) -> str | None:
    if response.status_code < 400 or not response.is_json:
        return None
    payload = response.get_json(silent=True)
    return payload.get("code") if isinstance(payload, dict) else None


def _audit_response(response):
    if request.method not in MUTATING_METHODS or request.blueprint not in API_BLUEPRINTS or not request.endpoint:
        return response
    endpoint = request.endpoint.rsplit(".", 1)[-1]
    if endpoint == "upload_chunk" and response.status_code < 400 and not current_app.config["AUDIT_LOG_CHUNKS"]:
        return response
    try:
        record(ACTIONS.get(endpoint, (endpoint, {}))[0], outcome=_outcome(response.status_code),
               account=g.get("account_id") or request_account(), ids=_request_ids(endpoint, response),
               status=response.status_code, code=_error_code(response), method=request.method,
               path=request.path[:MAX_VALUE_LENGTH])
    except Exception:  # noqa: BLE001 - the audit line never costs the client its answer
        log.exception("could not write the audit line of %s %s", request.method, request.path)
    return response


def _event_ids(data: dict) -> dict:
    ids = {}
    for source in (data, data.get("results")):
        if isinstance(source, dict):
            ids.update({key: _clip(value) for key, value in source.items()
                        if key.endswith(("Id", "Ids")) and value is not None})
    return ids


def audit_event(account_id, event_type: str, data: dict) -> None:
    """A line for an event published outside a request: the outcome of work that a request
    only queued (finalize, a task's run, expiry, recovery). Events of a request are its
    request's line already; progress is no change of state."""
    if has_request_context() or not has_app_context() or event_type.endswith(".progress"):
        return
    try:
        # An upload's failure messages are fixed texts; a task's may quote what it worked on
        # (an archive entry's path, an exception's text), which an audit line never holds.
        message = data.get("errorMessage") if event_type.startswith("upload.") else None
        fields = {"message": message} if message else {}
        record(event_type, outcome="failed" if event_type.endswith(".failed") else "ok", account=account_id,
               ids=_event_ids(data), **fields)
    except Exception:  # noqa: BLE001 - never fails the job that publishes
        log.exception("could not write the audit line of %s", event_type)
