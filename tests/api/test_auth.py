"""Authentication: every /api (and /drive) route wants `Authorization: Bearer <JWT>`; every
bad credential is a 401 in the error envelope, never a 500. The docs and the health check are
public. Every response carries X-Request-ID."""
from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import datetime, timedelta, timezone

import jwt
import pytest

PUBLIC = {"openapi_json", "docs"}
SEED_ROUTES = {
    ("POST", "/files/upload/create"), ("POST", "/files/upload/chunk/<task_id>/<chunk_index>"),
    ("POST", "/files/upload/complete/<task_id>"), ("GET", "/files/upload/tasks"),
    ("GET", "/files/upload/progress/<task_id>"), ("GET", "/files/upload/resume/<task_id>"),
    ("DELETE", "/files/upload/task/<task_id>"), ("GET", "/files/upload/tasks/<task_id>/details"),
    ("GET", "/files/upload/stats"), ("DELETE", "/files/upload/tasks/cleanup"), ("GET", "/files/upload/tasks/recent"),
    ("GET", "/files/<file_id>"), ("GET", "/files/<file_id>/download"), ("DELETE", "/files/<file_id>"),
    ("POST", "/bundles"), ("GET", "/bundles"), ("GET", "/bundles/<bundle_id>"), ("GET", "/pools"),
}
ARGUMENTS = {"task_id": "0123456789abcdef0123456789abcdef", "file_id": str(uuid.uuid4()),
             "bundle_id": str(uuid.uuid4()), "chunk_index": "0", "subscription_id": str(uuid.uuid4())}
ENVELOPE = {"code", "message", "status", "details"}


def protected_routes(app, blueprint: str) -> list[tuple[str, str]]:
    """(method, concrete URL) of every authenticated route of one registration of the API."""
    out = []
    for rule in app.url_map.iter_rules():
        name, _, endpoint = rule.endpoint.partition(".")
        if name != blueprint or endpoint in PUBLIC:
            continue
        url = rule.rule
        for argument in rule.arguments:
            url = re.sub(rf"<(?:[^:<>]+:)?{argument}>", ARGUMENTS[argument], url)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((method, url))
    return sorted(out)


def assert_401(response, codes=("UNAUTHORIZED", "INVALID_TOKEN", "TOKEN_EXPIRED")):
    assert response.status_code == 401, (response.status_code, response.get_data(as_text=True)[:300])
    body = response.get_json()
    assert set(body) == ENVELOPE, body
    assert body["status"] == 401 and body["code"] in codes, body
    assert isinstance(body["message"], str) and body["message"]
    return body


def test_the_route_table_is_complete(app):
    for blueprint, prefix in (("api", "/api"), ("drive", "/drive")):
        rules = {(m, r.rule[len(prefix):]) for r in app.url_map.iter_rules()
                 if r.endpoint.startswith(blueprint + ".") for m in r.methods - {"HEAD", "OPTIONS"}}
        assert SEED_ROUTES <= rules, SEED_ROUTES - rules


@pytest.mark.parametrize("blueprint", ["api", "drive"])
def test_every_route_wants_a_token(app, client, blueprint):
    routes = protected_routes(app, blueprint)
    assert len(routes) >= len(SEED_ROUTES)
    for method, url in routes:
        kwargs = {}
        if method == "POST":
            kwargs = {"data": b"x" * 100, "content_type": "application/octet-stream"}
        response = client.open(url, method=method, **kwargs)
        body = assert_401(response, codes=("UNAUTHORIZED",))
        assert "Bearer" in response.headers.get("WWW-Authenticate", ""), (method, url)
        assert body["details"] == {}, (method, url)


# tokens -------------------------------------------------------------------------------------
def b64(data: dict | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(**changes):
    now = datetime.now(timezone.utc)
    out = {"sub": str(uuid.uuid4()), "iat": now, "nbf": now, "exp": now + timedelta(hours=1)}
    for key, value in changes.items():
        if value is ...:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def bad_tokens(secret: str) -> dict[str, str]:
    now = datetime.now(timezone.utc)
    good = jwt.encode(claims(), secret, algorithm="HS256")
    header, payload, signature = good.split(".")
    unix = int(now.timestamp())
    forged_payload = b64({"sub": str(uuid.uuid4()), "exp": unix + 3600})
    return {
        "expired": jwt.encode(claims(iat=now - timedelta(hours=2), nbf=now - timedelta(hours=2),
                                     exp=now - timedelta(hours=1)), secret, algorithm="HS256"),
        "expired a minute ago": jwt.encode(claims(exp=now - timedelta(minutes=1)), secret, algorithm="HS256"),
        "not yet valid": jwt.encode(claims(nbf=now + timedelta(hours=1)), secret, algorithm="HS256"),
        "issued in the future": jwt.encode(claims(iat=now + timedelta(hours=1)), secret, algorithm="HS256"),
        "wrong signature": jwt.encode(claims(), secret + "-not", algorithm="HS256"),
        "payload swapped": f"{header}.{forged_payload}.{signature}",
        "signature stripped": f"{header}.{payload}.",
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "alg None": f"{b64({'alg': 'None', 'typ': 'JWT'})}.{payload}.",
        "HS512": jwt.encode(claims(), secret, algorithm="HS512"),
        "HS384": jwt.encode(claims(), secret, algorithm="HS384"),
        "missing sub": jwt.encode(claims(sub=...), secret, algorithm="HS256"),
        "sub not a UUID": jwt.encode(claims(sub="alice"), secret, algorithm="HS256"),
        "sub empty": jwt.encode(claims(sub=""), secret, algorithm="HS256"),
        "sub a number": jwt.encode(claims(sub=12345), secret, algorithm="HS256"),
        "sub null": jwt.encode(claims(sub=None), secret, algorithm="HS256"),
        "sub a list": jwt.encode(claims(sub=[str(uuid.uuid4())]), secret, algorithm="HS256"),
        "missing exp": jwt.encode(claims(exp=...), secret, algorithm="HS256"),
        "exp a string": f"{header}.{b64({'sub': str(uuid.uuid4()), 'exp': 'tomorrow'})}.{signature}",
        "exp a string, signed": jwt.encode({"sub": str(uuid.uuid4()), "exp": "tomorrow"}, secret,
                                          algorithm="HS256"),
        "payload not an object": jwt.api_jws.encode(b"[1, 2]", secret, algorithm="HS256"),
        "garbage": "garbage",
        "three dots": "a.b.c",
        "empty parts": "..",
        "bad base64": "!!!.@@@.###",
        "header only": header,
        "very long": "x" * 8000,
        "latin-1 text": "héllo.wörld.ß",
        "json header, no payload": f"{b64({'alg': 'HS256'})}..",
    }


TOKEN_CASES = list(bad_tokens("p" * 64))  # only the names


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # HS384/HS512 with the HS256 secret
@pytest.mark.parametrize("case", TOKEN_CASES)
@pytest.mark.parametrize("method,path", [("GET", "/api/files/upload/stats"), ("POST", "/drive/files/upload/create")])
def test_bad_tokens_are_401(app, client, case, method, path):
    token = bad_tokens(app.config["JWT_SECRET"])[case]
    kwargs = {}
    if method == "POST":
        kwargs["json"] = {"fileName": "a", "fileSize": 1, "contentType": "a/b", "hash": "0" * 64}
    response = client.open(path, method=method, headers={"Authorization": f"Bearer {token}"}, **kwargs)
    body = assert_401(response)
    text = response.get_data(as_text=True)
    assert app.config["JWT_SECRET"] not in text and "Traceback" not in text
    if case.startswith("expired"):
        assert body["code"] == "TOKEN_EXPIRED"


@pytest.mark.parametrize("header", [
    "Basic dXNlcjpwYXNz", "Basic xxx", "Token {token}", "Bearer", "Bearer ", "Bearer    ", "",
    "{token}", "JWT {token}", "Bearer: {token}",
])
def test_wrong_schemes_are_401(app, client, header):
    from app.auth import issue_token  # noqa: PLC0415

    token = issue_token(uuid.uuid4(), app=app)
    response = client.get("/api/files/upload/stats", headers={"Authorization": header.format(token=token)})
    assert_401(response)


@pytest.mark.parametrize("header", ["Bearer {token}", "bearer {token}", "BEARER {token}", "Bearer   {token}  "])
def test_a_valid_token_is_accepted(app, client, header):
    from app.auth import issue_token  # noqa: PLC0415

    token = issue_token(uuid.uuid4(), app=app)
    response = client.get("/api/files/upload/stats", headers={"Authorization": header.format(token=token)})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["totalTasks"] == 0


def test_a_token_built_with_pyjwt_is_accepted(app, client):
    account = uuid.uuid4()
    token = jwt.encode(claims(sub=str(account)), app.config["JWT_SECRET"], algorithm="HS256")
    created = client.post("/api/bundles", json={"name": "mine"}, headers={"Authorization": f"Bearer {token}"})
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["accountId"] == str(account)


# public routes ------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/api/openapi.json", "/api/docs", "/drive/openapi.json", "/drive/docs"])
@pytest.mark.parametrize("authorization", [None, "Bearer garbage"])
def test_docs_need_no_token(client, path, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = client.get(path, headers=headers)
    assert response.status_code == 200
    assert response.mimetype in ("application/json", "text/html")


def test_health(client, worker):
    response = client.get("/health/uploads")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["database"]["status"] == "ok" and body["redis"]["status"] == "ok"
    assert set(body["queues"]) == {"high", "default", "low"}
    assert all(isinstance(n, int) and n >= 0 for n in body["queues"].values())
    assert isinstance(body["workers"], int) and body["workers"] >= 1


# request ids --------------------------------------------------------------------------------
@pytest.mark.parametrize("method,path,auth,status", [
    ("GET", "/api/files/upload/stats", True, 200),
    ("GET", "/api/files/upload/stats", False, 401),
    ("GET", "/api/files/upload/progress/nope", True, 404),
    ("POST", "/api/files/upload/create", True, 400),
    ("GET", "/api/openapi.json", False, 200),
    ("GET", "/drive/files/upload/tasks", True, 200),
    ("GET", "/health/uploads", False, None),
])
def test_request_id_is_echoed(app, client, method, path, auth, status):
    from app.auth import issue_token  # noqa: PLC0415

    headers = {"Authorization": f"Bearer {issue_token(uuid.uuid4(), app=app)}"} if auth else {}
    request_id = f"req-{uuid.uuid4()}"
    response = client.open(path, method=method, headers=dict(headers, **{"X-Request-ID": request_id}),
                           json={} if method == "POST" else None)
    if status is not None:
        assert response.status_code == status, response.get_json()
    assert response.headers["X-Request-ID"] == request_id

    generated = client.open(path, method=method, headers=headers, json={} if method == "POST" else None)
    other = client.open(path, method=method, headers=headers, json={} if method == "POST" else None)
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["X-Request-ID"])
    assert generated.headers["X-Request-ID"] != other.headers["X-Request-ID"]


@pytest.mark.parametrize("bad", ["x" * 129, "a\tb", "a\x7fb"])
def test_unusable_request_ids_are_replaced(client, bad):
    response = client.get("/api/openapi.json", headers={"X-Request-ID": bad})
    assert response.status_code == 200
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])
