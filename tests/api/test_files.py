"""/files/{id} (metadata, download with ranges and validators, delete), /bundles and /pools."""
from __future__ import annotations

import os
import re
import uuid
from datetime import timedelta
from urllib.parse import unquote

import pytest
import sqlalchemy as sa
from werkzeug.http import parse_options_header


from tests.support import MIB, ApiClient, assert_error, database, quota_usage, random_bytes, sha256

FILE_FIELDS = {
    "id", "name", "description", "mimeType", "size", "hash", "fileMeta", "userMeta", "isEncrypted",
    "poolId", "bundleId", "accountId", "expiredAt", "uploadedAt", "createdAt", "updatedAt",
}
BUNDLE_FIELDS = {"id", "name", "description", "accountId", "createdAt", "updatedAt"}
POOL_FIELDS = {"id", "name", "description", "backend", "isPrivate", "maxFileSize", "acceptedTypes",
               "allowEncryption", "defaultChunkSize"}


# helpers ---------------------------------------------------------------------------------
def storage_key(app, file_id: str) -> str:
    from app.models import CloudFile  # noqa: PLC0415

    with database(app) as session:
        return session.get(CloudFile, uuid.UUID(file_id)).storage_key


def object_exists(app, key: str) -> bool:
    """Whether the default pool holds `key`, by its backend and on disk (file or folder)."""
    from app.services.pools import ensure_default_pool  # noqa: PLC0415
    from app.storage import backend_for  # noqa: PLC0415

    with database(app):
        held = backend_for(ensure_default_pool()).exists(key)
    on_disk = os.path.lexists(os.path.join(app.config["STORAGE_UPLOADS_PATH"], *key.split("/")))
    assert held == on_disk, (key, held, on_disk)
    return held


def uploaded(api, data: bytes, **fields) -> dict:
    done = api.upload(data, chunk_size=MIB if len(data) > MIB else None, **fields)
    assert done.status_code == 200, done.get_json()
    return done.get_json()


@pytest.fixture()
def stored(api, worker):
    """(file, data): a file of a little over 2 MiB in a fresh account (`api`'s)."""
    data = random_bytes(2 * MIB + 333, seed=1234)
    return uploaded(api, data, name="data.bin"), data


@pytest.fixture(scope="module")
def shared(app, worker):
    """(client, file, data): one file for the tests that only read it."""
    from app.auth import issue_token  # noqa: PLC0415

    account_id = uuid.uuid4()
    api = ApiClient(app.test_client(), issue_token(account_id, app=app), account_id)
    data = random_bytes(2 * MIB + 333, seed=4321)
    return api, uploaded(api, data, name="data.bin"), data


# GET /files/{id} -------------------------------------------------------------------------
def test_get_file_metadata(make_api, shared):
    api, file, data = shared
    response = api.get(f"/files/{file['id']}")
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == FILE_FIELDS
    assert body == file
    assert body["size"] == len(data) and body["hash"] == sha256(data)
    for name in ("uploadedAt", "createdAt", "updatedAt"):
        assert body[name].endswith("Z")

    assert make_api(api.account_id, prefix="/drive").get(f"/files/{file['id']}").get_json() == body
    assert_error(make_api().get(f"/files/{file['id']}"), 404, "FILE_NOT_FOUND")
    assert_error(api.get(f"/files/{uuid.uuid4()}"), 404, "FILE_NOT_FOUND")
    assert_error(api.get("/files/not-a-uuid"), 404, "FILE_NOT_FOUND")
    assert api.client.get(f"/api/files/{file['id']}").status_code == 401


# download: body and headers --------------------------------------------------------------
def test_download_streams_the_whole_file(make_api, shared):
    api, file, data = shared
    response = api.get(f"/files/{file['id']}/download")
    assert response.status_code == 200
    assert response.data == data
    assert response.headers["Content-Length"] == str(len(data))
    assert response.mimetype == "application/octet-stream"
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["ETag"] == f'"{sha256(data)}"'
    assert parse_options_header(response.headers["Content-Disposition"]) == ("attachment", {"filename": "data.bin"})
    assert_error(make_api().get(f"/files/{file['id']}/download"), 404, "FILE_NOT_FOUND")


def disposition_parts(value: str) -> tuple[str, str]:
    """(ASCII fallback, decoded filename*) of an attachment header; fails on anything else."""
    match = re.fullmatch(r"""attachment; filename="([^"\\]*)"; filename\*=UTF-8''([A-Za-z0-9%\-._~!$&'()*+,=:@]*)""",
                         value)
    assert match, value
    return match.group(1), unquote(match.group(2), encoding="utf-8", errors="strict")


@pytest.mark.parametrize("name", [
    "résumé 日本語 📄.txt",
    'quote".txt',
    'evil.txt"; filename="evil.exe',
    "x;y=z; filename*=UTF-8''owned.exe",
    "line\u2028break\u2029para.txt",
    "100%25 sure%.txt",
    "\u202egpj.exe",
    "tab like\u00a0space.txt",
])
def test_content_disposition_carries_any_name_safely(api, worker, name):
    data = random_bytes(64, seed=len(name))
    file = uploaded(api, data, name=name)
    assert file["name"] == name
    response = api.get(f"/files/{file['id']}/download")
    assert response.status_code == 200
    value = response.headers["Content-Disposition"]
    assert "\r" not in value and "\n" not in value
    assert all(32 <= ord(c) < 127 for c in value), value
    fallback, decoded = disposition_parts(value)
    assert decoded == name
    assert value.count('"') == 2
    assert not set(fallback) & set('"\\;%')
    assert parse_options_header(value) == ("attachment", {"filename": name})
    # no header but the expected ones came out of the name
    assert not [h for h in response.headers.keys() if h.lower().startswith("filename")]


@pytest.mark.parametrize("name", ["a\r\nSet-Cookie: x=1.txt", "a\nb.txt", "a\rb.txt", "nul\x00.txt", "nel\u0085.txt"])
def test_names_with_control_characters_are_refused_at_create(api, name):
    body = assert_error(api.create(b"hello", name=name), 400, "VALIDATION_ERROR")
    assert "fileName" in body["details"]["fields"]


# download: validators --------------------------------------------------------------------
def test_if_none_match_with_the_etag_is_304(shared):
    api, file, data = shared
    url = f"/files/{file['id']}/download"
    etag = f'"{sha256(data)}"'
    for header in (etag, f'"other", {etag}', "*"):
        response = api.get(url, headers={"If-None-Match": header})
        assert response.status_code == 304, header
        assert response.data == b""
        assert response.headers["ETag"] == etag
    fresh = api.get(url, headers={"If-None-Match": '"something-else"'})
    assert fresh.status_code == 200 and fresh.data == data


def test_if_none_match_uses_weak_comparison(shared):
    """RFC 9110 13.1.2: If-None-Match compares weakly, so W/"<etag>" matches too."""
    api, file, data = shared
    response = api.get(f"/files/{file['id']}/download", headers={"If-None-Match": f'W/"{sha256(data)}"'})
    assert response.status_code == 304


# download: ranges ------------------------------------------------------------------------
@pytest.mark.parametrize("header, start, end", [
    ("bytes=0-99", 0, 100),
    ("bytes=-10", -10, None),
    ("bytes=100-", 100, None),
    ("bytes=1048570-1048590", 1048570, 1048591),
    ("bytes=0-0", 0, 1),
    ("bytes=5-999999999", 5, None),
])
def test_range_requests(shared, header, start, end):
    api, file, data = shared
    size = len(data)
    response = api.get(f"/files/{file['id']}/download", headers={"Range": header})
    assert response.status_code == 206, response.get_json()
    first = start % size
    last = (end if end is not None else size) - 1
    assert response.data == data[first:last + 1]
    assert response.headers["Content-Range"] == f"bytes {first}-{last}/{size}"
    assert response.headers["Content-Length"] == str(last + 1 - first)
    assert response.headers["ETag"] == f'"{sha256(data)}"'


@pytest.mark.parametrize("header", ["bytes={size}-", "bytes={size}-{beyond}", "bytes={beyond}-"])
def test_unsatisfiable_range_is_416_with_the_envelope(shared, header):
    api, file, data = shared
    size = len(data)
    response = api.get(f"/files/{file['id']}/download",
                       headers={"Range": header.format(size=size, beyond=size + 100)})
    body = assert_error(response, 416, "RANGE_NOT_SATISFIABLE")
    assert body["message"]
    assert response.headers["Content-Range"] == f"bytes */{size}"


@pytest.mark.parametrize("header", ["bytes=abc", "bytes=10-5", "pages=0-5"])
def test_a_range_header_that_cannot_be_used_is_ignored(shared, header):
    """RFC 9110 14.2: a malformed Range, or one in a unit the server does not know, is ignored."""
    api, file, data = shared
    response = api.get(f"/files/{file['id']}/download", headers={"Range": header})
    assert response.status_code == 200, response.get_json()
    assert response.data == data


def test_if_range_with_the_current_etag_serves_the_range(shared):
    api, file, data = shared
    response = api.get(f"/files/{file['id']}/download",
                       headers={"Range": "bytes=0-99", "If-Range": f'"{sha256(data)}"'})
    assert response.status_code == 206
    assert response.data == data[:100]


@pytest.mark.parametrize("if_range", [
    '"0000000000000000000000000000000000000000000000000000000000000000"',
    '"an-older-version"',
    'W/"{etag}"',
    "Wed, 21 Oct 2015 07:28:00 GMT",
])
def test_if_range_without_a_strong_match_sends_the_whole_file(shared, if_range):
    """RFC 9110 13.1.5: If-Range matches only the current strong ETag (there is no
    Last-Modified for a date to match), otherwise the Range is ignored."""
    api, file, data = shared
    response = api.get(f"/files/{file['id']}/download",
                       headers={"Range": "bytes=0-99", "If-Range": if_range.format(etag=sha256(data))})
    assert response.status_code == 200
    assert response.data == data
    assert "Content-Range" not in response.headers


# DELETE /files/{id} ----------------------------------------------------------------------
def test_delete_removes_the_file_its_bytes_and_its_quota(app, api, make_api, stored):
    file, data = stored
    key = storage_key(app, file["id"])
    assert object_exists(app, key)
    assert quota_usage(app, api.account_id)["used"] == len(data)

    assert_error(make_api().delete(f"/files/{file['id']}"), 404, "FILE_NOT_FOUND")
    assert api.get(f"/files/{file['id']}").status_code == 200

    deleted = api.delete(f"/files/{file['id']}")
    assert deleted.status_code == 204
    assert deleted.data == b""
    assert_error(api.get(f"/files/{file['id']}"), 404, "FILE_NOT_FOUND")
    assert_error(api.get(f"/files/{file['id']}/download"), 404, "FILE_NOT_FOUND")
    assert_error(api.delete(f"/files/{file['id']}"), 404, "FILE_NOT_FOUND")
    assert not object_exists(app, key)
    usage = quota_usage(app, api.account_id)
    assert usage["used"] == 0 and usage["files"] == 0 and usage["reserved"] == 0

    # the same bytes are no longer "already stored"
    again = api.create(data)
    assert again.status_code == 200 and again.get_json()["fileExists"] is False


def test_expired_file_download_is_410(app, api, stored):
    from app.models import CloudFile  # noqa: PLC0415
    from app.models.types import utcnow  # noqa: PLC0415

    file, data = stored
    with database(app) as session:
        session.execute(sa.update(CloudFile).where(CloudFile.id == uuid.UUID(file["id"]))
                        .values(expired_at=utcnow() - timedelta(minutes=1)))
        session.commit()

    url = f"/files/{file['id']}/download"
    assert_error(api.get(url), 410, "FILE_EXPIRED")
    assert_error(api.get(url, headers={"Range": "bytes=0-9"}), 410, "FILE_EXPIRED")
    # an expired file is not offered as a duplicate either
    again = api.create(data)
    assert again.status_code == 200 and again.get_json()["fileExists"] is False


# bundles ---------------------------------------------------------------------------------
def test_bundles_create_list_get(api, make_api):
    created = api.post("/bundles", json={"name": "Holiday 2024", "description": "beach"})
    assert created.status_code == 201, created.get_json()
    bundle = created.get_json()
    assert set(bundle) == BUNDLE_FIELDS
    assert bundle["name"] == "Holiday 2024" and bundle["description"] == "beach"
    assert bundle["accountId"] == str(api.account_id)
    assert bundle["createdAt"].endswith("Z") and bundle["updatedAt"].endswith("Z")
    uuid.UUID(bundle["id"])

    second = api.post("/bundles", json={"name": "x" * 255})
    assert second.status_code == 201
    assert second.get_json()["description"] is None

    listing = api.get("/bundles")
    assert listing.status_code == 200
    assert listing.headers["X-Total"] == "2"
    assert {b["id"] for b in listing.get_json()} == {bundle["id"], second.get_json()["id"]}
    page = api.get("/bundles", query_string={"offset": 1, "limit": 1})
    assert page.headers["X-Total"] == "2" and len(page.get_json()) == 1
    assert page.get_json()[0]["id"] in {bundle["id"], second.get_json()["id"]}
    assert page.get_json()[0]["id"] != api.get("/bundles", query_string={"limit": 1}).get_json()[0]["id"]

    shown = api.get(f"/bundles/{bundle['id']}")
    assert shown.status_code == 200 and shown.get_json() == bundle
    assert make_api(api.account_id, prefix="/drive").get(f"/bundles/{bundle['id']}").get_json() == bundle

    stranger = make_api()
    assert_error(stranger.get(f"/bundles/{bundle['id']}"), 404, "BUNDLE_NOT_FOUND")
    theirs = stranger.get("/bundles")
    assert theirs.get_json() == [] and theirs.headers["X-Total"] == "0"
    assert_error(api.get(f"/bundles/{uuid.uuid4()}"), 404, "BUNDLE_NOT_FOUND")
    assert_error(api.get("/bundles/nope"), 404, "BUNDLE_NOT_FOUND")


@pytest.mark.parametrize("payload, field", [
    ({}, "name"),
    ({"name": ""}, "name"),
    ({"name": None}, "name"),
    ({"name": 123}, "name"),
    ({"name": "x" * 256}, "name"),
    ({"name": "ok", "description": "d" * 4001}, "description"),
    ({"name": "ok", "description": 5}, "description"),
    ({"name": "ok", "accountId": str(uuid.uuid4())}, "accountId"),
])
def test_bundle_validation_errors(api, payload, field):
    body = assert_error(api.post("/bundles", json=payload), 400, "VALIDATION_ERROR")
    assert field in body["details"]["fields"], body
    assert api.get("/bundles").headers["X-Total"] == "0"


def test_bundle_body_must_be_a_json_object(api):
    assert_error(api.post("/bundles", json=["name"]), 400, "INVALID_JSON")
    not_json = api.post("/bundles", data="name=x", content_type="application/x-www-form-urlencoded")
    assert not_json.status_code in (400, 415)
    assert set(not_json.get_json()) == {"code", "message", "status", "details"}


@pytest.mark.parametrize("query", [{"limit": "0"}, {"limit": "201"}, {"offset": "-1"}, {"limit": "many"}])
def test_bundle_list_rejects_bad_paging(api, query):
    assert_error(api.get("/bundles", query_string=query), 400, "VALIDATION_ERROR")


# pools -----------------------------------------------------------------------------------
def test_pools_list_the_default_pool_without_its_configuration(api):
    response = api.get("/pools")
    assert response.status_code == 200
    pools = response.get_json()
    default = [p for p in pools if p["name"] == "default"]
    assert len(default) == 1
    for pool in pools:
        assert set(pool) == POOL_FIELDS, sorted(pool)
        assert "config" not in pool
    assert default[0]["backend"] == "local"
    assert default[0]["isPrivate"] is False
    uuid.UUID(default[0]["id"])
    # uploads go to it when no pool is named
    created = api.create(b"pool me").get_json()
    progress = api.get(f"/files/upload/tasks/{created['taskId']}/details").get_json()
    assert progress["poolId"] == default[0]["id"]
