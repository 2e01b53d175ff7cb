"""Tenancy, systematically (invariant 5). Every route of the API is listed here or in
tests/api/test_tenancy.py, found through the app's url_map: a route added later without a
tenancy case fails `test_every_route_has_a_tenancy_case`.

- A route that takes an id (in its path or its body) is called by account B with each kind of
  account A's object: a 404 with the route's code, exactly what an id that does not exist gets,
  nothing of A in the answer, A's objects untouched, and no event in A's stream.
- A route that takes no id only ever shows B's own objects (`test_routes_without_ids_show_only_
  the_callers_objects`).
- Live events: while A works and B calls every route with A's ids, B's WebSocket and event
  stream receive B's events only.
"""
from __future__ import annotations

import io
import json
import secrets
import uuid
import zipfile
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from app.auth import issue_token
from app.events import publish_event, read_events
from app.extensions import db
from app.models import PushSubscription, Task, TaskStatus
from app.models.types import utcnow
from tests.api.test_push import subscription
from tests.api.test_tenancy import A_PASSWORD, ROUTES as SEED_CASES, World, a_client, assert_a_untouched
from tests.api.test_tenancy import call as call_seed_case
from tests.api.test_tenancy import ids_of, normalised, unknown_ids
from tests.api.test_tenancy import world  # noqa: F401 - the fixture: what account A owns
from tests.live.clients import EventStream, next_packet, open_socket, packets_until
from tests.support import ENVELOPE_KEYS, ApiClient, database, generic_task_count, random_bytes

PUBLIC = {"openapi_json", "docs"}
GENERIC_STATES = {"pending_task": TaskStatus.Pending, "paused_task": TaskStatus.Paused,
                  "running_task": TaskStatus.InProgress, "finished_task": TaskStatus.Completed}


@dataclass
class Case:
    method: str
    path: str
    code: str  # the 404 code expected
    body: dict | None = None  # JSON; "{name}" strings are replaced by ids


# name: a call of B with one of A's ids. {open_task}..{secret_file_id} are test_tenancy's World;
# {pending_task}.. are A's generic tasks; {subscription}/{endpoint} A's push subscription;
# {own_file}, {own_zip}, {default_pool} are B's own, so that only A's id is wrong.
CASES = {
    "generic task: get (pending)": Case("GET", "/tasks/{pending_task}", "TASK_NOT_FOUND"),
    "generic task: get (running)": Case("GET", "/tasks/{running_task}", "TASK_NOT_FOUND"),
    "generic task: get (finished)": Case("GET", "/tasks/{finished_task}", "TASK_NOT_FOUND"),
    "generic task: get A's upload": Case("GET", "/tasks/{open_task}", "TASK_NOT_FOUND"),
    "generic task: get A's completed upload": Case("GET", "/tasks/{done_task}", "TASK_NOT_FOUND"),
    "generic task: pause (pending)": Case("POST", "/tasks/{pending_task}/pause", "TASK_NOT_FOUND"),
    "generic task: pause (running)": Case("POST", "/tasks/{running_task}/pause", "TASK_NOT_FOUND"),
    "generic task: pause A's upload": Case("POST", "/tasks/{open_task}/pause", "TASK_NOT_FOUND"),
    "generic task: resume (paused)": Case("POST", "/tasks/{paused_task}/resume", "TASK_NOT_FOUND"),
    "generic task: cancel (pending)": Case("POST", "/tasks/{pending_task}/cancel", "TASK_NOT_FOUND"),
    "generic task: cancel (paused)": Case("POST", "/tasks/{paused_task}/cancel", "TASK_NOT_FOUND"),
    "generic task: cancel (running)": Case("POST", "/tasks/{running_task}/cancel", "TASK_NOT_FOUND"),
    "generic task: delete (finished)": Case("DELETE", "/tasks/{finished_task}", "TASK_NOT_FOUND"),
    "generic task: delete (pending)": Case("DELETE", "/tasks/{pending_task}", "TASK_NOT_FOUND"),
    "push: delete by id": Case("DELETE", "/push/subscriptions/{subscription}", "PUSH_SUBSCRIPTION_NOT_FOUND"),
    "push: delete by endpoint": Case("DELETE", "/push/subscriptions", "PUSH_SUBSCRIPTION_NOT_FOUND",
                                     {"endpoint": "{endpoint}"}),
    "compress A's file": Case("POST", "/tasks", "FILE_NOT_FOUND", {
        "type": "FileCompress", "parameters": {"fileIds": ["{own_file}", "{file_id}"]}}),
    "compress into A's bundle": Case("POST", "/tasks", "BUNDLE_NOT_FOUND", {
        "type": "FileCompress", "parameters": {"fileIds": ["{own_file}"], "bundleId": "{bundle_id}"}}),
    "convert A's file": Case("POST", "/tasks", "FILE_NOT_FOUND", {
        "type": "FileConversion", "parameters": {"fileId": "{file_id}", "targetFormat": "png"}}),
    "decompress A's file": Case("POST", "/tasks", "FILE_NOT_FOUND", {
        "type": "FileDecompress", "parameters": {"fileId": "{file_id}"}}),
    "decompress into A's bundle": Case("POST", "/tasks", "BUNDLE_NOT_FOUND", {
        "type": "FileDecompress", "parameters": {"fileId": "{own_zip}", "bundleId": "{bundle_id}"}}),
    "encrypt A's file": Case("POST", "/tasks", "FILE_NOT_FOUND", {
        "type": "FileEncrypt", "parameters": {"fileIds": ["{file_id}"], "password": "pw"}}),
    # not 403 WRONG_PASSWORD, nor a task: that would tell B the file exists (and which password fits)
    "decrypt A's file with its password": Case("POST", "/tasks", "FILE_NOT_FOUND", {
        "type": "FileDecrypt", "parameters": {"fileIds": ["{secret_file_id}"], "password": A_PASSWORD}}),
    "move A's file": Case("POST", "/tasks", "FILE_NOT_FOUND", {
        "type": "FileMove", "parameters": {"fileIds": ["{file_id}"], "targetPoolId": "{default_pool}"}}),
    "move into A's bundle": Case("POST", "/tasks", "BUNDLE_NOT_FOUND", {
        "type": "FileMove", "parameters": {"fileIds": ["{own_file}"], "targetBundleId": "{bundle_id}"}}),
    "move into A's pool": Case("POST", "/tasks", "POOL_NOT_FOUND", {
        "type": "FileMove", "parameters": {"fileIds": ["{own_file}"], "targetPoolId": "{pool_id}"}}),
    "migrate from A's pool": Case("POST", "/tasks", "POOL_NOT_FOUND", {
        "type": "StorageMigration", "parameters": {"sourcePoolId": "{pool_id}", "targetPoolId": "{default_pool}"}}),
    "migrate into A's pool": Case("POST", "/tasks", "POOL_NOT_FOUND", {
        "type": "StorageMigration", "parameters": {"sourcePoolId": "{default_pool}", "targetPoolId": "{pool_id}"}}),
    # (A's ids as targetIds fail one by one when the job runs: tests/jobs/test_task_bulk.py)
    "bulk move into A's bundle": Case("POST", "/tasks", "BUNDLE_NOT_FOUND", {
        "type": "BulkOperation", "parameters": {"operationType": "move", "targetIds": ["{own_file}"],
                                                "operationParameters": {"targetBundleId": "{bundle_id}"}}}),
}

# Routes that take no id of anything: what they show is checked to be B's own, below.
WITHOUT_IDS = {
    ("GET", "list_tasks"), ("GET", "recent_tasks"), ("GET", "upload_stats"), ("DELETE", "cleanup_tasks"),
    ("GET", "list_bundles"), ("POST", "create_bundle"), ("GET", "list_pools"), ("GET", "list_generic_tasks"),
    ("GET", "generic_task_stats"), ("GET", "list_subscriptions"), ("GET", "vapid_public_key"),
    ("POST", "create_subscription"),  # with A's endpoint: B's own row, A's keys untouched (below)
}


@pytest.fixture(scope="module")
def more_of_a(app, world) -> dict:
    """A's generic tasks (rows in each state; never queued, so no worker changes them) and a
    push subscription."""
    ids = {}
    now = utcnow()
    with app.app_context():
        for name, status in GENERIC_STATES.items():
            task = Task(task_id=secrets.token_hex(16), name=f"{world.marker}-{name}", type="Shout", status=status,
                        account_id=world.account_id, progress=0.0, parameters={"text": world.marker}, results={},
                        checkpoint={}, priority=50, last_activity=now, created_at=now, updated_at=now)
            db.session.add(task)
            db.session.commit()
            ids[name] = task.task_id
    body = subscription()
    created = a_client(app, world).post("/push/subscriptions", json=body)
    assert created.status_code == 201, created.get_json()
    ids.update(subscription=created.get_json()["id"], endpoint=body["endpoint"], keys=body["keys"])
    return ids


def a_ids(world: World, more: dict) -> dict:
    return dict(ids_of(world), **{k: more[k] for k in (*GENERIC_STATES, "subscription", "endpoint")})


def missing_ids() -> dict:
    return dict(unknown_ids(), **{k: secrets.token_hex(16) for k in GENERIC_STATES},
                subscription=str(uuid.uuid4()), endpoint=f"https://push.example.com/{uuid.uuid4().hex}")


def fill(template, ids: dict):
    """`template` with every "{name}" string replaced by ids[name]."""
    if isinstance(template, dict):
        return {key: fill(value, ids) for key, value in template.items()}
    if isinstance(template, list):
        return [fill(value, ids) for value in template]
    return template.format(**ids) if isinstance(template, str) else template


@pytest.fixture(scope="module")
def b_account(app, worker) -> tuple[uuid.UUID, dict]:
    """Account B, and its own file, zip archive and default pool: the cases that need B's own
    objects send them with A's id, so that only A's id is wrong."""
    b = ApiClient(app.test_client(), None, uuid.uuid4())
    b.token = issue_token(b.account_id, app=app)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x.txt", "x")
    own = {}
    for key, data, name in (("own_file", random_bytes(100), "own.bin"), ("own_zip", buffer.getvalue(), "own.zip")):
        done = b.upload(data, name=name)
        assert done.status_code == 200, done.get_json()
        own[key] = done.get_json()["id"]
    own["default_pool"] = next(p["id"] for p in b.get("/pools").get_json() if p["name"] == "default")
    return b.account_id, own


def call_case(b: ApiClient, case: Case, ids: dict):
    body = fill(case.body, ids) if case.body is not None else None
    return b.request(case.method, case.path.format(**ids), json=body)


def stream_length(app, account_id) -> int:
    with app.app_context():
        return len(read_events(account_id))


def assert_a_untouched_too(app, world: World, more: dict) -> None:
    """test_tenancy's checks, and A's generic tasks and push subscription as they were."""
    assert_a_untouched(app, world)
    a = a_client(app, world)
    for name, status in GENERIC_STATES.items():
        shown = a.get(f"/tasks/{more[name]}")
        assert shown.status_code == 200 and shown.get_json()["status"] == status.name, (name, shown.get_json())
    with database(app) as session:
        row = session.scalar(sa.select(PushSubscription).where(PushSubscription.id == uuid.UUID(more["subscription"])))
        assert row is not None and row.account_id == world.account_id
        assert (row.p256dh, row.auth) == (more["keys"]["p256dh"], more["keys"]["auth"])


# the map ------------------------------------------------------------------------------------
def endpoint_of(app, method: str, path: str) -> str:
    endpoint, _ = app.url_map.bind("localhost").match("/api" + path.split("?")[0], method=method)
    return endpoint.split(".", 1)[1]


def test_every_route_has_a_tenancy_case(app):
    ids = missing_ids()
    covered = {(m, endpoint_of(app, m, p.format(**ids))) for m, p, *_ in SEED_CASES.values()}
    covered |= {(c.method, endpoint_of(app, c.method, c.path.format(**ids))) for c in CASES.values()}
    covered |= WITHOUT_IDS
    routes = {(method, rule.endpoint.split(".", 1)[1]) for rule in app.url_map.iter_rules()
              if rule.endpoint.startswith("api.") and rule.endpoint.split(".", 1)[1] not in PUBLIC
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert routes - covered == set(), "routes without a tenancy case (add one here or to WITHOUT_IDS)"
    assert covered - routes == set(), "tenancy cases of routes that no longer exist"


# ids of another account ---------------------------------------------------------------------
@pytest.mark.parametrize("prefix", ["/api", "/drive"])
@pytest.mark.parametrize("name", list(CASES))
def test_other_accounts_ids_are_404_on_every_route(app, world, more_of_a, b_account, make_api, name, prefix):
    case = CASES[name]
    b_id, own = b_account
    b = make_api(b_id, prefix=prefix)
    theirs, missing = a_ids(world, more_of_a), missing_ids()
    a_events = stream_length(app, world.account_id)

    response = call_case(b, case, dict(theirs, **own))
    body = response.get_json()
    assert response.status_code == 404, (response.status_code, body)
    assert set(body) == ENVELOPE_KEYS and body["status"] == 404 and body["code"] == case.code, body
    text = response.get_data(as_text=True)
    for secret in world.secrets() + [more_of_a["endpoint"]]:
        assert secret not in text, f"{secret!r} of account A leaked: {text}"
    control = call_case(b, case, dict(missing, **own))
    assert control.status_code == 404
    assert normalised(body, theirs) == normalised(control.get_json(), missing)  # nothing tells them apart

    assert generic_task_count(b) == 0  # no task was made
    assert stream_length(app, world.account_id) == a_events  # nothing B did reached A's events
    assert_a_untouched_too(app, world, more_of_a)


# routes without ids ------------------------------------------------------------------------
def test_routes_without_ids_show_only_the_callers_objects(app, world, more_of_a, make_api):
    b = make_api()
    assert b.post("/bundles", json={"name": "b's"}).status_code == 201
    again = b.post("/push/subscriptions", json=subscription(more_of_a["endpoint"]))  # A's endpoint
    assert again.status_code == 201, again.get_json()  # B's own row, not an update of A's
    assert b.create(random_bytes(300), name="b.bin").status_code == 200

    seen = {}
    for method, path in (("GET", "/files/upload/tasks?limit=200"), ("GET", "/files/upload/tasks/recent?limit=100"),
                         ("GET", "/files/upload/stats"), ("GET", "/bundles?limit=200"), ("GET", "/pools"),
                         ("GET", "/tasks?limit=200"), ("GET", "/tasks/stats"), ("GET", "/push/subscriptions"),
                         ("GET", "/push/vapid-public-key"), ("DELETE", "/files/upload/tasks/cleanup")):
        response = b.request(method, path)
        assert response.status_code == 200, (path, response.get_json())
        seen[path] = response.get_json()
    assert [t["type"] for t in seen["/tasks?limit=200"]] == ["FileUpload"]
    assert seen["/tasks/stats"]["totalTasks"] == 1 and seen["/tasks/stats"]["byType"] == {"FileUpload": 1}
    assert [s["endpoint"] for s in seen["/push/subscriptions"]] == [more_of_a["endpoint"]]
    assert [x["name"] for x in seen["/bundles?limit=200"]] == ["b's"]
    assert seen["/files/upload/tasks/cleanup"] == {"removedTasks": 0, "taskIds": []}
    text = json.dumps(seen)
    a_objects = {k: v for k, v in a_ids(world, more_of_a).items() if k != "endpoint"}  # (B has that endpoint too now)
    for secret in world.secrets() + list(a_objects.values()):
        assert secret not in text, secret
    assert_a_untouched_too(app, world, more_of_a)


# live events ---------------------------------------------------------------------------------
def test_no_event_of_one_account_reaches_anothers_socket(app, world, more_of_a, b_account, make_api, live_server):
    """B listens by WebSocket and SSE while A uploads, runs a task and is sent events, and B
    calls every route with A's ids: B receives B's own marker and nothing else; A's own
    socket meanwhile receives A's events and none of B's."""
    b_id, own = b_account
    b = make_api(b_id)
    a = a_client(app, world)
    b_socket = open_socket(live_server, b.token, b.account_id, how="message")
    b_stream = EventStream(live_server, b.token, how="query").wait_connected()
    a_socket = open_socket(live_server, world.token, world.account_id)
    try:
        done = a.upload(random_bytes(2000), name="a-live.bin")
        assert done.status_code == 200, done.get_json()
        assert a.post("/tasks", json={"type": "Shout", "parameters": {"text": "a"}}).status_code == 201
        for name in CASES:
            call_case(b, CASES[name], dict(a_ids(world, more_of_a), **own))
        for name in SEED_CASES:
            call_seed_case(b, name, ids_of(world))
        with app.app_context():
            a_end = publish_event(world.account_id, "test.end", {})
            b_end = publish_event(b.account_id, "test.end", {})

        b_packets = packets_until(b_socket, b_end)
        assert b_packets == b_stream.packets_until(b_end)
        assert [p["type"] for p in b_packets] == ["test.end"], b_packets
        a_packets = packets_until(a_socket, a_end)
        assert str(b.account_id) not in json.dumps(a_packets)
        assert {"upload.completed", "task.created"} <= {p["type"] for p in a_packets}, a_packets
        b.post("/bundles", json={"name": "after"})  # (no event) then one more of B's own
        with app.app_context():
            last = publish_event(b.account_id, "test.last", {})
        assert next_packet(b_socket)["id"] == last
    finally:
        for closable in (b_socket, b_stream, a_socket):
            closable.close()
