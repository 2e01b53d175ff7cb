"""Header injection through a file name into Content-Disposition (tests/api/test_files.py checks
the names an upload may have). Here, the other ways a name arrives and the function itself:

- an archive whose entry names hold CR/LF, other control characters or bytes that are not
  UTF-8 is refused whole by FileDecompress, nothing extracted;
- a name that no route accepts, planted in the database (a row from before a rule, or from a
  path that forgot it), still downloads with one safe header and nothing injected;
- for any text at all, `content_disposition` gives one line of printable ASCII that parses
  back to the name (property-based, with hypothesis).
"""
from __future__ import annotations

import io
import tarfile
import uuid

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.http import parse_options_header

from app.api.files import content_disposition
from app.auth import issue_token
from app.models import CloudFile
from tests.api.test_files import disposition_parts
from tests.jobs.test_task_decompress import assert_nothing_left, make_zip, run_task, storage_objects, stored_file
from tests.support import ApiClient, database, random_bytes, sha256

INJECTIONS = ["evil\r\nSet-Cookie: session=stolen.txt", "a\nX-Injected: 1.txt", "bell\x07.txt", "esc\x1b[2J.txt",
              "next\x85line.txt", "del\x7f.txt"]


def tar_with_raw_name(raw_name: bytes, data: bytes = b"x") -> bytes:
    """A tar.gz whose one entry's name is exactly these bytes (a GNU/ustar header allows any)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.GNU_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as archive:
        info = tarfile.TarInfo(raw_name.decode("utf-8", "surrogateescape"))
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


ARCHIVES = {
    "zip, CR/LF": lambda: make_zip({"ok.txt": b"fine", "dir/" + INJECTIONS[0]: b"x"}),
    "tar, C1": lambda: tar_with_raw_name(INJECTIONS[4].encode()),
    "tar, not UTF-8": lambda: tar_with_raw_name(b"caf\xe9\xff.txt"),
}


@pytest.mark.parametrize("case", list(ARCHIVES))
def test_archives_with_hostile_entry_names_are_refused_whole(app, api, redis, worker, case):
    name = "hostile.zip" if case.startswith("zip") else "hostile.tar.gz"
    archive = stored_file(api, ARCHIVES[case](), name)
    before = storage_objects(app)
    task = run_task(api, redis, {"fileId": archive["id"]})
    assert task["status"] == "Failed", task
    assert "refused" in task["errorMessage"] and "not allowed" in task["errorMessage"], task["errorMessage"]
    assert "\r" not in task["errorMessage"] and "\n" not in task["errorMessage"]
    assert_nothing_left(app, api, archive, before)


@pytest.fixture(scope="module")
def owner(app):
    account_id = uuid.uuid4()
    return ApiClient(app.test_client(), issue_token(account_id, app=app), account_id)


@pytest.fixture(scope="module")
def planted(app, owner, worker):
    """plant(name) → the id of one of `owner`'s files, renamed in the database to `name`."""
    data = random_bytes(1000)
    done = owner.upload(data, name="plain.bin")
    assert done.status_code == 200, done.get_json()
    file_id = done.get_json()["id"]

    def plant(name: str) -> str:
        with database(app) as session:
            session.execute(sa.update(CloudFile).where(CloudFile.id == uuid.UUID(file_id)).values(name=name))
            session.commit()
        return file_id

    plant.data = data
    return plant


@pytest.mark.parametrize("name", INJECTIONS + ['q"; filename="evil.exe', "\\\\server\\share", "\u00e9" * 255])
def test_a_hostile_name_in_the_database_cannot_inject_a_header(owner, planted, name):
    file_id = planted(name)
    response = owner.get(f"/files/{file_id}/download")
    assert response.status_code == 200 and sha256(response.data) == sha256(planted.data)
    assert {key.lower() for key in response.headers.keys()} & {"set-cookie", "x-injected"} == set()
    value = response.headers["Content-Disposition"]
    assert all(32 <= ord(c) < 127 for c in value), value
    fallback, decoded = disposition_parts(value)
    assert decoded == name
    assert not set(fallback) & set('"\\;%')
    assert parse_options_header(value) == ("attachment", {"filename": name})


@settings(max_examples=200, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_content_disposition_is_one_safe_line_for_any_name(name):
    value = content_disposition(name)
    assert all(32 <= ord(c) < 127 for c in value), value
    fallback, decoded = disposition_parts(value)
    assert decoded == name
    assert fallback and not set(fallback) & set('"\\;%')
