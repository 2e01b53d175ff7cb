"""Hostile input on every route, found through the app itself (the body and query schemas the
views declare, and the url_map), so that a new route is covered as soon as it exists:

- JSON bodies: empty, another content type, not UTF-8, nested 10,000 deep, duplicate keys,
  NaN, numbers of 5,000 digits, larger than the limit (with a Content-Length, and chunked),
  strings the database cannot store (U+0000, unpaired surrogates);
- names with control characters (bundles, tasks, archive and conversion outputs, pools),
  dates past year 9999;
- query strings: bad, huge, repeated and control-character values of every parameter;
- path ids: NUL, line breaks, traversal, 10,000 characters, quotes;
- chunk bodies over a real socket: a Content-Length smaller than the body, both
  Content-Length and Transfer-Encoding, a chunked body larger than the chunk.

Every answer is the error envelope with a 4xx, and nothing is stored that should not be.
(tests/api/ has the field-by-field validation of uploads, files and bundles.)"""
from __future__ import annotations

import json
import socket
import uuid

import pytest

from app.api.decorators import MAX_JSON_BYTES, SPEC_ATTR
from tests.support import (MIB, assert_clean_error, assert_error, create_task, generic_task_count, invoke,
                           random_bytes, sha256)

HOSTILE_STRINGS = {"nul": "a\x00b", "crlf": "a\r\nSet-Cookie: x=1", "escape": "\x1b[2J", "c1": "a\x85b",
                   "surrogate": "\ud800x"}


def body_routes(app) -> dict[str, tuple[str, str]]:
    """{endpoint: (method, path)} of every /api route that reads a JSON body (the @body decorator)."""
    return {rule.endpoint: (method, rule.rule) for rule in app.url_map.iter_rules()
            if rule.endpoint.startswith("api.") and "body" in getattr(app.view_functions[rule.endpoint], SPEC_ATTR, {})
            for method in rule.methods - {"HEAD", "OPTIONS"}}


def query_routes(app) -> dict[str, tuple[str, object]]:
    """{endpoint: (path, query schema class)} of every /api route that reads a query string."""
    out = {}
    for rule in app.url_map.iter_rules():
        spec = getattr(app.view_functions[rule.endpoint], SPEC_ATTR, {})
        if rule.endpoint.startswith("api.") and "query" in spec:
            out[rule.endpoint] = (rule.rule, spec["query"])
    return out


def assert_nothing_stored(api) -> None:
    assert api.get("/files/upload/tasks").headers["X-Total"] == "0"
    assert api.get("/bundles").headers["X-Total"] == "0"
    assert generic_task_count(api) == 0
    assert api.get("/push/subscriptions").get_json() == []


def send(client, method, path, token, data, content_type="application/json", **headers):
    headers["Authorization"] = f"Bearer {token}"
    return client.open(path, method=method, data=data, content_type=content_type, headers=headers)


# JSON bodies ---------------------------------------------------------------------------------
def deep(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


BAD_JSON = {  # name: (raw body, content type, status, code)
    "empty": (b"", "application/json", 400, "INVALID_JSON"),
    "whitespace": (b"  \n ", "application/json", 400, "INVALID_JSON"),
    "text/plain": (b'{"name": "x"}', "text/plain", 415, "INVALID_JSON"),
    "form": (b"name=x", "application/x-www-form-urlencoded", 415, "INVALID_JSON"),
    "no content type": (b'{"name": "x"}', None, 415, "INVALID_JSON"),
    "latin-1": ('{"name": "caf\u00e9"}'.encode("latin-1"), "application/json", 400, "INVALID_JSON"),
    "utf-16": ('{"name": "x"}'.encode("utf-16"), "application/json", 400, "INVALID_JSON"),
    "utf-8 BOM": (b'\xef\xbb\xbf{"name": "x"}', "application/json", 400, "INVALID_JSON"),
    "truncated": (b'{"name": "x"', "application/json", 400, "INVALID_JSON"),
    "array": (b"[]", "application/json", 400, "INVALID_JSON"),
    "10,000 arrays deep": (b"[" * 10_000 + b"]" * 10_000, "application/json", 400, "INVALID_JSON"),
    "10,000 objects deep": (deep(10_000), "application/json", 400, "INVALID_JSON"),
    "40 objects deep": (deep(40), "application/json", 400, "INVALID_JSON"),
    "duplicate key": (b'{"name": "a", "name": "b"}', "application/json", 400, "INVALID_JSON"),
    "duplicate nested key": (b'{"parameters": {"x": 1, "x": 2}}', "application/json", 400, "INVALID_JSON"),
    "NaN": (b'{"fileSize": NaN}', "application/json", 400, "INVALID_JSON"),
    "Infinity": (b'{"fileSize": -Infinity}', "application/json", 400, "INVALID_JSON"),
    "5,000 digits": (b'{"fileSize": ' + b"9" * 5000 + b"}", "application/json", 400, "INVALID_JSON"),
    "NUL in a value": (b'{"name": "a\\u0000b"}', "application/json", 400, "VALIDATION_ERROR"),
    "NUL in a key": (b'{"a\\u0000": 1}', "application/json", 400, "VALIDATION_ERROR"),
    "unpaired surrogate": (b'{"name": "\\ud800"}', "application/json", 400, "VALIDATION_ERROR"),
    "unpaired surrogate, deep": (b'{"parameters": {"x": ["ok", "\\udfff"]}}', "application/json", 400,
                                 "VALIDATION_ERROR"),
}


@pytest.mark.parametrize("case", list(BAD_JSON))
def test_every_json_route_refuses_bad_json(app, client, api, case):
    data, content_type, status, code = BAD_JSON[case]
    routes = body_routes(app)
    assert {e.split(".")[1] for e in routes} >= {"create_upload", "create_bundle", "create_generic_task",
                                                 "create_subscription", "delete_subscription_by_endpoint"}
    for endpoint, (method, path) in routes.items():
        response = send(client, method, path, api.token, data, content_type)
        error = assert_error(response, status, code)
        if code == "VALIDATION_ERROR":  # names the field, as marshmallow does
            assert error["details"]["fields"], (endpoint, error)
    assert_nothing_stored(api)


def test_a_valid_pair_of_surrogates_is_one_character(api):
    """Escaped surrogate pairs are how JSON spells characters beyond the BMP: accepted."""
    created = api.post("/bundles", data=b'{"name": "\\ud83d\\udcc1 photos"}', content_type="application/json")
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["name"] == "\U0001f4c1 photos"


def test_json_bodies_larger_than_the_limit_are_413(app, client, api):
    padding = b" " * MAX_JSON_BYTES
    for endpoint, (method, path) in body_routes(app).items():
        response = send(client, method, path, api.token, b'{"name": "x"}' + padding)
        assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert_nothing_stored(api)


def test_a_chunked_json_body_larger_than_the_limit_is_413(live_server, api):
    """No Content-Length: werkzeug stops reading at the limit; what it read is not taken for
    the whole body."""
    pieces = [b'{"name": "x"' + b" " * MIB] + [b" " * MIB] * 4 + [b"}"]
    head = (f"POST /api/bundles HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {api.token}\r\nConnection: close\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    answer = exchange(live_server, head + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["code"] == "PAYLOAD_TOO_LARGE"
    assert_nothing_stored(api)


# names and text ------------------------------------------------------------------------------
NAMED = {  # what: (path, the body with a given name, the path of the field refused)
    "bundle name": ("/bundles", lambda s: {"name": s}, ["name"]),
    "bundle description": ("/bundles", lambda s: {"name": "ok", "description": "line\n" + s}, ["description"]),
    "task name": ("/tasks", lambda s: {"type": "Shout", "name": s, "parameters": {"text": "x"}}, ["name"]),
    "task description": ("/tasks", lambda s: {"type": "Shout", "description": s, "parameters": {"text": "x"}},
                         ["description"]),
    "archive name": ("/tasks", lambda s: {"type": "FileCompress", "parameters": {
        "fileIds": [str(uuid.uuid4())], "outputFileName": s}}, ["parameters", "outputFileName"]),
    "converted file name": ("/tasks", lambda s: {"type": "FileConversion", "parameters": {
        "fileId": str(uuid.uuid4()), "targetFormat": "png", "outputFileName": s}}, ["parameters", "outputFileName"]),
    "upload file name": ("/files/upload/create", lambda s: {
        "fileName": s, "fileSize": 1, "contentType": "a/b", "hash": "ab" * 32}, ["fileName"]),
}


@pytest.mark.parametrize("what, hostile", [(what, hostile) for what in NAMED for hostile in HOSTILE_STRINGS
                                           if not (what.endswith("description") and hostile == "crlf")])
def test_names_with_control_characters_are_refused(api, what, hostile):
    """(A description may hold line breaks: it is text, not a name.)"""
    path, body, field = NAMED[what]
    error = assert_error(api.post(path, json=body(HOSTILE_STRINGS[hostile])), 400, "VALIDATION_ERROR")
    messages = error["details"]["fields"]
    for key in field:
        assert key in messages, (what, error)
        messages = messages[key]
    assert_nothing_stored(api)


@pytest.mark.parametrize("name", ["../../etc/passwd", "..", "a/b", "a\\b", "/abs"])
@pytest.mark.parametrize("what", ["archive name", "converted file name"])
def test_output_file_names_are_one_path_component(api, what, name):
    path, body, _ = NAMED[what]
    error = assert_error(api.post(path, json=body(name)), 400, "VALIDATION_ERROR")
    assert "outputFileName" in error["details"]["fields"]["parameters"], error


def test_display_names_keep_what_is_not_a_control_character(api):
    """Quotes, slashes, tabs in descriptions, right-to-left marks and emoji are text, kept as sent."""
    name, description = 'a/b "c" \u202egpj.exe \U0001f600', "two\nlines\tand a tab"
    created = api.post("/bundles", json={"name": name, "description": description})
    assert created.status_code == 201, created.get_json()
    shown = api.get(f"/bundles/{created.get_json()['id']}").get_json()
    assert (shown["name"], shown["description"]) == (name, description)


@pytest.mark.parametrize("name", ["evil\npool", "bell\x07", "esc\x1b[2J", "   ", "p" * 101])
def test_pool_names_with_control_characters_are_refused(app_context, runner, name):
    """Pools are made by operators (`flask pools create`), and every account sees their names."""
    assert_clean_error(invoke(runner, "pools", "create", name), "pool name")
    listed = json.loads(invoke(runner, "pools", "list", "--json").output)
    assert name not in [p["name"] for p in listed]


# numbers and dates ---------------------------------------------------------------------------
@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59-14:00", "9999-12-31T23:59:59.999999-00:01",
                                    "10000-01-01T00:00:00Z", "0000-01-01T00:00:00Z", "2030-13-01T00:00:00Z",
                                    "2030-01-01T25:00:00Z", "2030-01-01T00:00:00+24:00"])
def test_dates_out_of_range_are_400(api, moment):
    upload = {"fileName": "a", "fileSize": 1, "contentType": "a/b", "hash": "ab" * 32, "expiredAt": moment}
    assert_error(api.post("/files/upload/create", json=upload), 400, "VALIDATION_ERROR", "expiredAt")
    bulk = {"type": "BulkOperation", "parameters": {"operationType": "setExpiry", "targetIds": [str(uuid.uuid4())],
                                                    "operationParameters": {"expiredAt": moment}}}
    assert_error(api.post("/tasks", json=bulk), 400, "VALIDATION_ERROR")
    push = {"endpoint": "https://push.example.com/x", "expirationTime": moment,
            "keys": {"p256dh": "x", "auth": "y"}}
    assert_error(api.post("/push/subscriptions", json=push), 400, "VALIDATION_ERROR", "expirationTime")
    assert_nothing_stored(api)


@pytest.mark.parametrize("field, value", [
    ("priority", 2**63), ("priority", -(2**63) - 1), ("priority", 1e300), ("priority", "50"),
    ("estimatedDurationSeconds", 2**63), ("estimatedDurationSeconds", -1), ("estimatedDurationSeconds", 1.5),
])
def test_task_numbers_out_of_range_are_400(api, field, value):
    body = {"type": "Shout", "parameters": {"text": "x"}, field: value}
    assert_error(api.post("/tasks", json=body), 400, "VALIDATION_ERROR", field)
    assert_nothing_stored(api)


# query strings -------------------------------------------------------------------------------
def bad_values(field) -> list[str]:
    """Values no parameter of that kind may take."""
    from marshmallow import fields  # noqa: PLC0415

    if isinstance(field, fields.Integer):
        return ["-1", "abc", "1.5", "1e3", "9" * 400, "", " 1", "0x10"]
    if isinstance(field, fields.Boolean):
        return ["maybe", "2", "", "9" * 400]
    return ["x" * 100_000, "\x00", "a\nb"]


def test_every_query_parameter_refuses_bad_values(app, api):
    routes = query_routes(app)
    assert {e.split(".")[1] for e in routes} >= {"list_tasks", "recent_tasks", "list_bundles", "list_generic_tasks"}
    for endpoint, (path, schema_class) in routes.items():
        schema = schema_class()
        for name, field in schema.fields.items():
            key = field.data_key or name
            for value in bad_values(field):
                response = api.client.get(path, query_string={key: value}, headers=api.headers())
                assert response.status_code == 400, (endpoint, key, value[:20], response.get_json())
                error = assert_error(response, 400, "VALIDATION_ERROR")
                assert key in error["details"]["fields"], (endpoint, key, value[:20], error)
            repeated = api.client.get(path, query_string=[(key, "1"), (key, "2")], headers=api.headers())
            error = assert_error(repeated, 400, "VALIDATION_ERROR")
            assert error["details"]["fields"] == {key: ["Give this parameter once."]}, (endpoint, error)
        # parameters a route does not know are ignored, however many
        unknown = [(f"x{n}", "y" * 100) for n in range(2000)] + [("token", "a"), ("token", "b")]
        assert api.client.get(path, query_string=unknown, headers=api.headers()).status_code == 200, endpoint


# path ids ------------------------------------------------------------------------------------
PATH_IDS = {"nul": "%00", "line break": "a%0D%0Ab", "traversal": "..%2F..%2Fetc", "dots": "..", "quote": "'%20OR%201=1--",
            "long": "a" * 10_000, "unicode": "%C3%A9t%C3%A9", "bad utf-8": "%FF%FE", "percent": "%25",
            "uuid with braces": "%7B" + str(uuid.uuid4()) + "%7D"}


@pytest.mark.parametrize("value", list(PATH_IDS))
def test_hostile_ids_in_paths_are_404(app, api, value):
    """Each id of each route's path, given something no id can be: the route's 404 (or for a
    chunk index, its 400), never a 500; and nothing changes."""
    checked = 0
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("api.") or not rule.arguments:
            continue
        for argument in rule.arguments:
            filled = {a: PATH_IDS[value] if a == argument else str(uuid.uuid4().hex) for a in rule.arguments}
            url = rule.rule
            for name, text in filled.items():
                url = url.replace(f"<{name}>", text)
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                response = api.request(method, url[len("/api"):], data=b"x", content_type="application/octet-stream")
                payload = response.get_json()
                assert response.status_code in (400, 404, 405), (method, url[:100], payload)
                assert payload["code"].endswith("NOT_FOUND") or payload["code"].startswith("CHUNK_INDEX") \
                    or payload["code"] == "METHOD_NOT_ALLOWED", (method, url[:100], payload)
                checked += 1
    assert checked >= 17  # every id of every method of every route
    assert_nothing_stored(api)


# chunk bodies on the wire --------------------------------------------------------------------
def exchange(base: str, request: bytes) -> bytes:
    """Send raw bytes to the server, half-close, and read everything it answers (until it
    closes the connection)."""
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        try:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server answered and hung up before reading it all
            pass
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    return answer


def chunk_request(api, task_id: str, index: int, body: bytes, **headers) -> bytes:
    lines = [f"POST /api/files/upload/chunk/{task_id}/{index} HTTP/1.1", "Host: drive", "Connection: close",
             f"Authorization: Bearer {api.token}", "Content-Type: application/octet-stream"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def statuses(answer: bytes) -> list[int]:
    return [int(line.split()[1]) for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]


def test_bytes_beyond_the_content_length_are_not_part_of_the_chunk(live_server, api, worker):
    """The last chunk's Content-Length is honoured: the bytes after it are read as the next
    request (which gunicorn refuses as garbage), never appended to the chunk."""
    data = random_bytes(MIB + 100)
    task = create_task(api, data, chunkSize=MIB)
    smuggled = b"GARBAGE " * 1000 + b"\r\n\r\n"
    answer = exchange(live_server, chunk_request(api, task["taskId"], 1, data[MIB:] + smuggled,
                                                 Content_Length=100))
    assert statuses(answer)[0] == 200, answer[:500]
    assert all(status >= 400 for status in statuses(answer)[1:]), answer[:800]
    resume = api.get(f"/files/upload/resume/{task['taskId']}").get_json()
    assert resume["uploadedChunks"] == [1] and resume["bytesUploaded"] == 100, resume
    assert api.send_chunk(task["taskId"], 0, data[:MIB]).status_code == 200
    done = api.complete(task["taskId"])
    assert done.status_code == 200 and done.get_json()["hash"] == sha256(data), done.get_json()


@pytest.mark.parametrize("headers, body", [
    ({"Content-Length": "5", "Transfer-Encoding": "chunked"}, b"5\r\nhello\r\n0\r\n\r\n"),
    ({"Transfer-Encoding": "chunked", "Content-Length": str(MIB)}, b"5\r\nhello\r\n0\r\n\r\n"),
    ({"Content-Length": str(MIB), "Content-Length ": "5"}, b"x" * MIB),
    ({"Transfer-Encoding": "chunked, identity"}, b"5\r\nhello\r\n0\r\n\r\n"),
], ids=["CL then TE", "TE then CL", "two lengths", "TE list"])
def test_ambiguous_framing_is_refused_and_stores_nothing(live_server, api, headers, body):
    data = random_bytes(2 * MIB)
    task = create_task(api, data, chunkSize=MIB)
    head = chunk_request(api, task["taskId"], 0, b"")
    head = head[:-2] + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items()) + b"\r\n"
    answer = exchange(live_server, head + body)
    assert statuses(answer) and all(400 <= s < 500 for s in statuses(answer)), answer[:500]
    assert api.get(f"/files/upload/resume/{task['taskId']}").get_json()["uploadedChunks"] == []


def test_a_chunked_body_larger_than_the_chunk_stores_nothing(live_server, api):
    data = random_bytes(2 * MIB)
    task = create_task(api, data, chunkSize=MIB)
    pieces = [data[:MIB], data[:MIB], b"x" * (16 * MIB)]
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    answer = exchange(live_server, chunk_request(api, task["taskId"], 0, body, Transfer_Encoding="chunked"))
    assert statuses(answer)[0] in (400, 413), answer[:500]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1].split(b"\n", 1)[0])["code"] in (
        "CHUNK_SIZE_MISMATCH", "CHUNK_TOO_LARGE")
    assert api.get(f"/files/upload/resume/{task['taskId']}").get_json()["uploadedChunks"] == []
    assert api.send_chunk(task["taskId"], 0, data[:MIB]).status_code == 200  # and it goes on as usual
