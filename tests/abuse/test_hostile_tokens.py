"""Bad credentials everywhere: every bad token of tests/api/test_auth.py (expired, not yet
valid, wrong signature, `alg: none`, missing or malformed `sub`, garbage...) on every
authenticated route of both registrations of the API, on the server-sent-events routes (header
and ?token=) and on the WebSocket (header, ?token= and the first `auth` message): always a 401
envelope (a 4401 close on the WebSocket) with the right code, never a 500, never an event.
Also: the API itself never takes a token from the query string, and only a JSON `true` admin
claim is an admin."""
from __future__ import annotations

import uuid

import jwt
import pytest
import websocket

from app.auth import issue_token
from app.events import publish_event
from tests.api.test_auth import assert_401, bad_tokens, claims, protected_routes
from tests.live.clients import close_frame, connect
from tests.support import ApiClient, assert_error, generic_task_count

TOKEN_CASES = list(bad_tokens("p" * 64))
LIVE_PATHS = ["/events", "/api/events", "/drive/events"]
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # HS384/HS512 cases


def expected_code(case: str) -> str:
    return "TOKEN_EXPIRED" if case.startswith("expired") else "INVALID_TOKEN"


@pytest.mark.parametrize("case", TOKEN_CASES)
def test_every_route_refuses_every_bad_token(app, client, case):
    token = bad_tokens(app.config["JWT_SECRET"])[case]
    routes = protected_routes(app, "api") + protected_routes(app, "drive")
    for method, url in routes:
        kwargs = {"data": b"{}", "content_type": "application/json"} if method in ("POST", "DELETE") else {}
        response = client.open(url, method=method, headers={"Authorization": f"Bearer {token}"}, **kwargs)
        body = assert_401(response, codes=(expected_code(case),))
        assert app.config["JWT_SECRET"] not in response.get_data(as_text=True), (method, url)
        assert body["details"] == {}, (method, url, body)


def test_the_api_takes_no_token_from_the_query_string(app, client):
    """Only the live routes take ?token= (a browser's EventSource and WebSocket cannot send
    headers); a token in an API URL would end up in proxy and access logs."""
    token = issue_token(uuid.uuid4(), app=app)
    for url in ("/api/files/upload/stats", "/drive/bundles", "/api/tasks"):
        assert_401(client.get(url, query_string={"token": token}), codes=("UNAUTHORIZED",))
        assert_401(client.get(url, query_string={"access_token": token}), codes=("UNAUTHORIZED",))


@pytest.mark.parametrize("case", TOKEN_CASES)
def test_server_sent_events_refuse_every_bad_token(app, client, case):
    token = bad_tokens(app.config["JWT_SECRET"])[case]
    for path in LIVE_PATHS:
        by_header = client.get(path, headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"})
        by_query = client.get(path, query_string={"token": token}, headers={"Accept": "text/event-stream"})
        for response in (by_header, by_query):
            assert response.mimetype == "application/json", (path, response.mimetype)
            assert_401(response, codes=(expected_code(case),))


def refused_socket(base: str, token: str, how: str) -> tuple[int | None, str]:
    """(close code, reason) of a socket opened with `token` sent `how`; fails if any message
    (auth.ok, an event) comes before the close. (None, status) when the handshake itself is
    refused."""
    try:
        ws = connect(base, token, how=how)
    except websocket.WebSocketBadStatusException as error:
        return None, str(error.status_code)
    try:
        return close_frame(ws)
    finally:
        ws.shutdown()


@pytest.mark.parametrize("how", ["header", "query", "message"])
def test_websockets_refuse_every_bad_token(app, live_server, how):
    """Each bad token, sent each way, closes the socket with 4401 and the error code, and an
    event published to the account the token names meanwhile never reaches it."""
    secret = app.config["JWT_SECRET"]
    for case, token in bad_tokens(secret).items():
        named = _readable_sub(token)
        if how == "query" and len(token) > 4000:  # past gunicorn's request-line limit: refused before the app
            assert refused_socket(live_server, token, how) == (None, "414"), case
            continue
        ws = connect(live_server, token, how=how)
        try:
            if isinstance(named, str):
                with app.app_context():
                    try:
                        publish_event(uuid.UUID(named), "test.secret", {"case": case})
                    except ValueError:
                        pass  # a sub that is no account id cannot be published to
            code, reason = close_frame(ws)
        finally:
            ws.shutdown()
        assert code == 4401, (case, code, reason)
        assert reason.startswith(expected_code(case) + ": "), (case, reason)


def _readable_sub(token: str):
    """The `sub` a token claims, read without checking anything (None if unreadable)."""
    try:
        return jwt.decode(token, options={"verify_signature": False}).get("sub")
    except (jwt.PyJWTError, AttributeError):
        return None


# the admin claim ----------------------------------------------------------------------------
def _token_with(app, account_id, **extra) -> str:
    return jwt.encode(claims(sub=str(account_id), **extra), app.config["JWT_SECRET"], algorithm="HS256")


@pytest.mark.parametrize("admin", ["true", "false", 1, "yes", {"is": True}, [True]],
                         ids=["string true", "string false", "one", "yes", "object", "list"])
def test_only_a_json_true_admin_claim_is_an_admin(app, client, admin):
    account = uuid.uuid4()
    migration = {"type": "StorageMigration", "parameters": {
        "sourcePoolId": str(uuid.uuid4()), "targetPoolId": str(uuid.uuid4()), "scope": "all"}}
    headers = {"Authorization": f"Bearer {_token_with(app, account, admin=admin)}"}
    assert_error(client.post("/api/tasks", json=migration, headers=headers), 403, "ADMIN_REQUIRED")

    real_admin = {"Authorization": f"Bearer {_token_with(app, account, admin=True)}"}
    # past the admin check, the (random) pools are looked up
    assert_error(client.post("/api/tasks", json=migration, headers=real_admin), 404, "POOL_NOT_FOUND")
    assert generic_task_count(ApiClient(client, _token_with(app, account), account)) == 0
