"""CORS (app/cors.py): off unless CORS_ORIGINS names origins; preflights for the chunk route's
headers; the headers a page needs exposed, on errors and 429s too."""
from __future__ import annotations

import uuid

import pytest

from config import Config
from tests.conftest import make_token
from tests.support import ApiClient, assert_error, create_task, random_bytes

APP_ORIGIN = "https://app.example.com"
CHUNK_HEADERS = "authorization, content-type, x-chunk-sha256"


def build_app(settings, **overrides):
    from app import create_app  # noqa: PLC0415

    return create_app(Config.from_env(settings, TESTING=True, **overrides))


@pytest.fixture(scope="module")
def cors_app(app, settings):
    return build_app(settings, CORS_ORIGINS=f"{APP_ORIGIN}, https://admin.example.com", CORS_MAX_AGE=900,
                     RATELIMIT_READ="2/minute")


def preflight(client, path, origin=APP_ORIGIN, method="POST", headers=CHUNK_HEADERS):
    return client.options(path, headers={"Origin": origin, "Access-Control-Request-Method": method,
                                         "Access-Control-Request-Headers": headers})


def header_set(response, name) -> set[str]:
    return {part.strip().lower() for part in response.headers.get(name, "").split(",") if part.strip()}


@pytest.mark.parametrize("prefix", ["/api", "/drive"])
def test_a_preflight_for_a_chunk_is_answered(cors_app, prefix):
    answer = preflight(cors_app.test_client(), f"{prefix}/files/upload/chunk/{uuid.uuid4().hex}/0")
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert {"authorization", "content-type", "x-chunk-sha256"} <= header_set(answer, "Access-Control-Allow-Headers")
    assert "POST" in answer.headers["Access-Control-Allow-Methods"]
    assert answer.headers["Access-Control-Max-Age"] == "900"
    assert "Access-Control-Allow-Credentials" not in answer.headers
    assert "origin" in header_set(answer, "Vary")


def test_an_origin_not_listed_gets_no_cors_headers(cors_app):
    client = cors_app.test_client()
    answer = preflight(client, "/api/files/upload/create", origin="https://evil.example.net")
    assert "Access-Control-Allow-Origin" not in answer.headers
    token = make_token(cors_app, uuid.uuid4())
    read = client.get("/api/files/upload/tasks", headers={"Origin": "https://evil.example.net",
                                                         "Authorization": f"Bearer {token}"})
    assert read.status_code == 200 and "Access-Control-Allow-Origin" not in read.headers


def test_answers_expose_what_a_page_reads(cors_app):
    client = cors_app.test_client()
    account = uuid.uuid4()
    api = ApiClient(client, make_token(cors_app, account), account)
    create_task(api, random_bytes(100))
    headers = {"Origin": "https://admin.example.com"}
    listed = api.get("/files/upload/tasks", headers=headers)
    assert listed.status_code == 200 and listed.headers["X-Total"] == "1"
    assert listed.headers["Access-Control-Allow-Origin"] == "https://admin.example.com"
    exposed = header_set(listed, "Access-Control-Expose-Headers")
    assert {"x-total", "retry-after", "x-request-id", "x-ratelimit-limit", "x-ratelimit-remaining",
            "x-ratelimit-reset", "content-disposition", "content-range"} <= exposed
    # errors and 429s too (reads are limited to 2 a minute here): a page must be able to read
    # the envelope and Retry-After
    missing = api.get(f"/files/upload/progress/{uuid.uuid4().hex}", headers=headers)
    assert_error(missing, 404, "UPLOAD_NOT_FOUND")
    assert missing.headers["Access-Control-Allow-Origin"] == "https://admin.example.com"
    limited = api.get("/bundles", headers=headers)
    assert_error(limited, 429, "RATE_LIMITED")
    assert limited.headers["Access-Control-Allow-Origin"] == "https://admin.example.com"
    assert "retry-after" in header_set(limited, "Access-Control-Expose-Headers")


def test_cors_is_off_by_default(client):
    answer = preflight(client, "/api/files/upload/create")
    assert answer.status_code == 200
    assert not [name for name in answer.headers.keys() if name.lower().startswith("access-control-")]


def test_any_origin_when_configured_with_a_star(app, settings):
    client = build_app(settings, CORS_ORIGINS="*").test_client()
    answer = preflight(client, "/api/events", method="GET", headers="authorization, last-event-id")
    assert answer.headers["Access-Control-Allow-Origin"] in ("*", APP_ORIGIN)
    assert {"authorization", "last-event-id"} <= header_set(answer, "Access-Control-Allow-Headers")
    assert "Access-Control-Allow-Origin" not in client.get("/health/uploads", headers={"Origin": APP_ORIGIN}).headers
