"""FileDecompress with a real worker: zip and tar.gz entries become files in a bundle, byte for
byte; archives that would escape (zip-slip, absolute paths, links) and archive bombs (too
large, lying about sizes, too many entries) fail with a clear error and leave nothing; a
cancel in the middle of an extraction, also after a pause and resume, leaves nothing."""
from __future__ import annotations

import io
import struct
import tarfile
import uuid
import zipfile

import pytest
import sqlalchemy as sa

from tests.support import generic_task_count, EventListener, assert_error, database, quota_usage, random_bytes, sha256

FINAL = ("task.completed", "task.failed", "task.cancelled", "task.paused")


# helpers -------------------------------------------------------------------------------------
def stored_file(api, data: bytes, name: str, content_type: str = "application/octet-stream") -> dict:
    done = api.upload(data, name=name, content_type=content_type)
    assert done.status_code == 200, done.get_json()
    return done.get_json()


def wait_for(listener, task_id: str, types=FINAL, timeout: float = 60) -> dict:
    while True:
        packet = listener.next(timeout)
        assert packet is not None, f"no {types} for {task_id}: {listener.packets[-5:]}"
        if packet["data"].get("taskId") == task_id and packet["type"] in types:
            return packet


def run_task(api, redis, parameters: dict) -> dict:
    listener = EventListener(redis, api.account_id)
    created = api.post("/tasks", json={"type": "FileDecompress", "priority": 80, "parameters": parameters})
    assert created.status_code == 201, created.get_json()
    task_id = created.get_json()["taskId"]
    wait_for(listener, task_id)
    listener.close()
    return api.get(f"/tasks/{task_id}").get_json()


def make_zip(entries: dict, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in entries.items():
            if data is None:
                archive.writestr(zipfile.ZipInfo(name), b"")  # a folder entry when name ends in '/'
            else:
                archive.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return buffer.getvalue()


def make_tar_gz(entries: dict, links: dict | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            archive.addfile(info)
    return buffer.getvalue()


def lie_about_size(data: bytes, name: str, declared: int) -> bytes:
    """The zip with entry `name`'s uncompressed size changed to `declared` in both its local
    header and its central directory record (the data stay as they were)."""
    out = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo(name)
        start_dir = archive.start_dir
    struct.pack_into("<I", out, info.header_offset + 22, declared)
    offset = start_dir
    while out[offset:offset + 4] == b"PK\x01\x02":
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", out, offset + 28)
        if bytes(out[offset + 46:offset + 46 + name_len]).decode() == name:
            struct.pack_into("<I", out, offset + 24, declared)
        offset += 46 + name_len + extra_len + comment_len
    return bytes(out)


def storage_objects(app) -> set:
    from app.services.pools import ensure_default_pool
    from app.storage import backend_for

    with database(app):
        return {key for key, _ in backend_for(ensure_default_pool()).list_objects("files/")}


def account_rows(app, account_id) -> tuple[list, list]:
    from app.models import Bundle, CloudFile

    with database(app) as session:
        files = list(session.scalars(sa.select(CloudFile.id).where(CloudFile.account_id == account_id)))
        bundles = list(session.scalars(sa.select(Bundle.id).where(Bundle.account_id == account_id)))
    return files, bundles


def checkpoint_of(app, task_id: str) -> dict:
    from app.models import Task

    with database(app) as session:
        return session.scalars(sa.select(Task.checkpoint).where(Task.task_id == task_id)).one()


def assert_nothing_left(app, api, archive: dict, objects_before: set) -> None:
    files, bundles = account_rows(app, api.account_id)
    assert [str(f) for f in files] == [archive["id"]], files  # not even rows marked deleted
    assert bundles == []
    # Objects stored meanwhile may only be other accounts' files (a job of another test); an
    # object of this task, with or without a row, or a temporary one, is a leftover.
    from app.models import CloudFile

    new = storage_objects(app) - objects_before
    with database(app) as session:
        others = set(session.scalars(sa.select(CloudFile.storage_key).where(
            CloudFile.storage_key.in_(new), CloudFile.account_id != api.account_id,
            CloudFile.deleted_at.is_(None)))) if new else set()
    assert new == others, new - others
    assert quota_usage(app, api.account_id)["used"] == archive["size"]


def assert_extracted(api, task: dict, expected: dict) -> None:
    """Every expected file (name → (archive path, bytes)) is in the task's bundle, byte for byte."""
    assert task["status"] == "Completed", task["errorMessage"]
    results = task["results"]
    assert results["filesExtracted"] == len(expected) == len(results["fileIds"])
    assert results["totalSize"] == sum(len(data) for _, data in expected.values())
    seen = {}
    for file_id in results["fileIds"]:
        meta = api.get(f"/files/{file_id}").get_json()
        assert meta["bundleId"] == results["bundleId"], meta
        download = api.get(f"/files/{file_id}/download")
        assert download.status_code == 200
        assert meta["hash"] == sha256(download.data)
        seen[meta["fileMeta"]["archivePath"]] = (meta["name"], sha256(download.data))
    assert seen == {path: (name, sha256(data)) for name, (path, data) in expected.items()}


# extraction ----------------------------------------------------------------------------------
def test_a_zip_becomes_files_in_a_new_bundle_named_after_it(app, api, redis, worker):
    a, b, c = random_bytes(700_000), b"hello\n" * 10_000, b""
    archive = stored_file(api, make_zip({"a.bin": a, "docs/": None, "docs/readme.txt": b, "empty.txt": c}),
                          "project.zip", "application/zip")
    task = run_task(api, redis, {"fileId": archive["id"]})
    assert_extracted(api, task, {"a.bin": ("a.bin", a), "readme.txt": ("docs/readme.txt", b),
                                 "empty.txt": ("empty.txt", c)})
    bundle = api.get(f"/bundles/{task['results']['bundleId']}").get_json()
    assert bundle["name"] == "project"
    assert quota_usage(app, api.account_id)["used"] == archive["size"] + len(a) + len(b)


@pytest.mark.parametrize("name", ["photos.tar.gz", "photos.tgz"])
def test_a_tar_gz_becomes_files_in_the_bundle_given(app, api, redis, worker, name):
    bundle = api.post("/bundles", json={"name": "target"}).get_json()
    files = {f"img/{n}.raw": random_bytes(50_000 * n + 1) for n in range(1, 6)}
    files["notes.md"] = b"# notes\n"
    archive = stored_file(api, make_tar_gz({"img": None, **files}), name, "application/gzip")
    task = run_task(api, redis, {"fileId": archive["id"], "bundleId": bundle["id"]})
    assert task["results"]["bundleId"] == bundle["id"]
    assert_extracted(api, task, {path.rsplit("/", 1)[-1]: (path, data) for path, data in files.items()})
    assert api.get("/bundles").headers["X-Total"] == "1"  # no second bundle


# refused at creation -------------------------------------------------------------------------
def test_bad_requests_are_refused_at_creation(api, make_api, worker):
    text = stored_file(api, b"just text", "notes.txt", "text/plain")
    theirs = stored_file(make_api(), make_zip({"x": b"x"}), "x.zip", "application/zip")
    mine = stored_file(api, make_zip({"x": b"y"}), "y.zip", "application/zip")
    cases = [
        ({"fileId": text["id"]}, 400, "UNSUPPORTED_ARCHIVE"),
        ({"fileId": theirs["id"]}, 404, "FILE_NOT_FOUND"),
        ({"fileId": mine["id"], "bundleId": str(uuid.uuid4())}, 404, "BUNDLE_NOT_FOUND"),
        ({"fileId": mine["id"], "maxEntries": 0}, 400, "VALIDATION_ERROR"),
        ({"fileId": "nope"}, 400, "VALIDATION_ERROR"),
    ]
    for parameters, status, code in cases:
        assert_error(api.post("/tasks", json={"type": "FileDecompress", "parameters": parameters}), status, code)
    assert generic_task_count(api) == 0


def test_limits_are_capped_by_the_configuration(app, api, redis, worker):
    mine = stored_file(api, make_zip({"x": b"y"}), "y.zip", "application/zip")
    task = run_task(api, redis, {"fileId": mine["id"], "maxTotalSize": 2**62, "maxEntries": 10**9})
    assert task["parameters"]["maxTotalSize"] == app.config["TASK_DECOMPRESS_MAX_TOTAL_BYTES"]
    assert task["parameters"]["maxEntries"] == app.config["TASK_DECOMPRESS_MAX_ENTRIES"]
    assert task["status"] == "Completed" and task["results"]["filesExtracted"] == 1


# refused while running: escapes -----------------------------------------------------------------
@pytest.mark.parametrize("archive_bytes, name, fragment", [
    (lambda: make_zip({"ok.txt": b"fine", "../evil": b"x"}), "slip.zip", "'..' component"),
    (lambda: make_zip({"ok.txt": b"fine", "a/../../evil": b"x"}), "slip2.zip", "'..' component"),
    (lambda: make_zip({"ok.txt": b"fine", "/etc/cron.d/evil": b"x"}), "abs.zip", "absolute path"),
    (lambda: make_zip({"ok.txt": b"fine", "..\\evil": b"x"}), "win.zip", "'..' component"),
    (lambda: make_tar_gz({"ok.txt": b"fine", "/abs": b"x"}), "abs.tar.gz", "absolute path"),
    (lambda: make_tar_gz({"ok.txt": b"fine", "../evil": b"x"}), "slip.tar.gz", "'..' component"),
    (lambda: make_tar_gz({"ok.txt": b"fine"}, {"link": (tarfile.SYMTYPE, "/etc/passwd")}), "sym.tgz", "is a link"),
    (lambda: make_tar_gz({"ok.txt": b"fine"}, {"hard": (tarfile.LNKTYPE, "ok.txt")}), "hard.tgz", "is a link"),
    (lambda: make_tar_gz({"ok.txt": b"fine"}, {"dev": (tarfile.CHRTYPE, "")}), "dev.tgz", "special file"),
], ids=["zip-dotdot", "zip-nested-dotdot", "zip-absolute", "zip-backslash", "tar-absolute", "tar-dotdot",
        "tar-symlink", "tar-hardlink", "tar-device"])
def test_entries_that_would_escape_refuse_the_whole_archive(app, api, redis, worker, archive_bytes, name, fragment):
    archive = stored_file(api, archive_bytes(), name, "application/octet-stream")
    before = storage_objects(app)
    task = run_task(api, redis, {"fileId": archive["id"]})
    assert task["status"] == "Failed", task
    assert "refused" in task["errorMessage"] and fragment in task["errorMessage"], task["errorMessage"]
    assert_nothing_left(app, api, archive, before)


def test_a_zip_symlink_entry_is_refused(app, api, redis, worker):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("ok.txt", b"fine")
        link = zipfile.ZipInfo("link")
        link.create_system, link.external_attr = 3, (0o120777 << 16)
        z.writestr(link, b"/etc/passwd")
    archive = stored_file(api, buffer.getvalue(), "link.zip", "application/zip")
    before = storage_objects(app)
    task = run_task(api, redis, {"fileId": archive["id"]})
    assert task["status"] == "Failed" and "is a link" in task["errorMessage"], task
    assert_nothing_left(app, api, archive, before)


# refused while running: bombs --------------------------------------------------------------------
def test_an_archive_larger_than_the_limit_is_refused(app, api, redis, worker):
    archive = stored_file(api, make_zip({f"z{n}.bin": bytes(100_000) for n in range(3)}), "big.zip")
    before = storage_objects(app)
    task = run_task(api, redis, {"fileId": archive["id"], "maxTotalSize": 250_000})
    assert task["status"] == "Failed" and "more than the limit of 250000 bytes" in task["errorMessage"], task
    assert_nothing_left(app, api, archive, before)


def test_a_tar_larger_than_the_limit_is_refused(app, api, redis, worker):
    archive = stored_file(api, make_tar_gz({f"z{n}.bin": bytes(100_000) for n in range(3)}), "big.tgz")
    before = storage_objects(app)
    task = run_task(api, redis, {"fileId": archive["id"], "maxTotalSize": 250_000})
    assert task["status"] == "Failed" and "more than the limit of 250000 bytes" in task["errorMessage"], task
    assert_nothing_left(app, api, archive, before)


def test_a_zip_that_lies_about_its_sizes_fails_and_leaves_nothing(app, api, redis, worker):
    """The central directory says 1,000 bytes; the entry inflates to 5 MB. The honest entry
    before it is extracted first and must be removed again."""
    data = lie_about_size(make_zip({"ok.txt": random_bytes(20_000), "bomb.bin": bytes(5_000_000)}),
                          "bomb.bin", 1000)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.getinfo("bomb.bin").file_size == 1000
    archive = stored_file(api, data, "liar.zip", "application/zip")
    before = storage_objects(app)
    task = run_task(api, redis, {"fileId": archive["id"], "maxTotalSize": 100_000})
    assert task["status"] == "Failed", task
    assert "damaged" in task["errorMessage"] or "limit" in task["errorMessage"], task["errorMessage"]
    assert_nothing_left(app, api, archive, before)


def test_overlapping_zip_entries_are_refused(app, api, redis, worker):
    """A second central directory record pointing at the first entry's data (how
    non-recursive zip bombs multiply one compressed stream)."""
    data = bytearray(make_zip({"a.bin": bytes(200_000)}))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        start_dir = z.start_dir
    eocd = data.rindex(b"PK\x05\x06")
    record = bytes(data[start_dir:eocd])
    twin = bytearray(record)
    twin[46:46 + 5] = b"b.bin"
    central = record + bytes(twin)
    end = bytearray(data[eocd:])
    struct.pack_into("<HHII", end, 8, 2, 2, len(central), start_dir)
    archive = stored_file(api, bytes(data[:start_dir]) + central + bytes(end), "overlap.zip")
    before = storage_objects(app)
    task = run_task(api, redis, {"fileId": archive["id"]})
    assert task["status"] == "Failed" and "overlap" in task["errorMessage"], task
    assert_nothing_left(app, api, archive, before)


@pytest.mark.parametrize("maker, name", [(make_zip, "many.zip"), (make_tar_gz, "many.tgz")])
def test_too_many_entries_are_refused(app, api, redis, worker, maker, name):
    archive = stored_file(api, maker({f"f{n}.txt": b"x" for n in range(30)}), name)
    before = storage_objects(app)
    task = run_task(api, redis, {"fileId": archive["id"], "maxEntries": 10})
    assert task["status"] == "Failed" and "limit of 10" in task["errorMessage"], task
    assert_nothing_left(app, api, archive, before)


def test_a_file_that_is_no_archive_fails_clearly(app, api, redis, worker):
    archive = stored_file(api, random_bytes(5000), "fake.zip", "application/zip")
    before = storage_objects(app)
    task = run_task(api, redis, {"fileId": archive["id"]})
    assert task["status"] == "Failed" and "not a zip or tar archive" in task["errorMessage"], task
    assert_nothing_left(app, api, archive, before)


# cancel --------------------------------------------------------------------------------------------
MANY = 3000


def many_entries() -> bytes:
    return make_zip({f"part-{n:05d}.bin": random_bytes(1024, seed=n) for n in range(MANY)}, zipfile.ZIP_STORED)


def test_a_cancel_mid_extraction_leaves_nothing(app, api, redis, worker):
    archive = stored_file(api, many_entries(), "many.zip", "application/zip")
    before = storage_objects(app)
    listener = EventListener(redis, api.account_id)
    task_id = api.post("/tasks", json={"type": "FileDecompress", "parameters": {"fileId": archive["id"]}}
                       ).get_json()["taskId"]
    wait_for(listener, task_id, ("task.progress",))
    assert api.post(f"/tasks/{task_id}/cancel").status_code == 200
    assert wait_for(listener, task_id)["type"] == "task.cancelled"
    listener.close()
    assert api.get(f"/tasks/{task_id}").get_json()["status"] == "Cancelled"
    assert 0 < checkpoint_of(app, task_id)["entriesDone"] < MANY
    assert_nothing_left(app, api, archive, before)


def test_a_cancel_after_pause_and_resume_removes_the_files_of_both_runs(app, api, redis, worker):
    archive = stored_file(api, many_entries(), "many.zip", "application/zip")
    before = storage_objects(app)
    listener = EventListener(redis, api.account_id)
    task_id = api.post("/tasks", json={"type": "FileDecompress", "parameters": {"fileId": archive["id"]}}
                       ).get_json()["taskId"]
    wait_for(listener, task_id, ("task.progress",))
    assert api.post(f"/tasks/{task_id}/pause").status_code == 200
    assert wait_for(listener, task_id)["type"] == "task.paused"
    paused = api.get(f"/tasks/{task_id}").get_json()
    checkpoint = checkpoint_of(app, task_id)
    first_run = checkpoint["fileIds"]
    assert paused["status"] == "Paused" and 0 < checkpoint["entriesDone"] == len(first_run) < MANY
    assert api.get(f"/files/{first_run[0]}").status_code == 200  # the first run's files exist meanwhile

    assert api.post(f"/tasks/{task_id}/resume").status_code == 200
    progress = wait_for(listener, task_id, ("task.progress",))
    assert progress["data"]["progress"] > paused["progress"]
    assert api.post(f"/tasks/{task_id}/cancel").status_code == 200
    assert wait_for(listener, task_id)["type"] == "task.cancelled"
    listener.close()
    assert api.get(f"/tasks/{task_id}").get_json()["status"] == "Cancelled"
    assert checkpoint_of(app, task_id)["entriesDone"] > len(first_run)
    assert_nothing_left(app, api, archive, before)


def test_a_paused_extraction_resumes_after_the_entries_done(app, api, redis, worker):
    archive = stored_file(api, many_entries(), "many.zip", "application/zip")
    listener = EventListener(redis, api.account_id)
    task_id = api.post("/tasks", json={"type": "FileDecompress", "parameters": {"fileId": archive["id"]}}
                       ).get_json()["taskId"]
    wait_for(listener, task_id, ("task.progress",))
    assert api.post(f"/tasks/{task_id}/pause").status_code == 200
    assert wait_for(listener, task_id)["type"] == "task.paused"
    first_run = checkpoint_of(app, task_id)["fileIds"]
    assert api.post(f"/tasks/{task_id}/resume").status_code == 200
    assert wait_for(listener, task_id)["type"] == "task.completed"
    listener.close()
    results = api.get(f"/tasks/{task_id}").get_json()["results"]
    assert results["filesExtracted"] == MANY == len(set(results["fileIds"]))
    assert results["fileIds"][:len(first_run)] == first_run  # kept, not made again
    assert results["totalSize"] == MANY * 1024
    files, bundles = account_rows(app, api.account_id)
    assert len(files) == MANY + 1 and len(bundles) == 1
    for number in (0, len(first_run) - 1, len(first_run), MANY - 1):
        data = api.get(f"/files/{results['fileIds'][number]}/download").data
        assert data == random_bytes(1024, seed=number)


def test_a_cancel_while_paused_removes_what_the_paused_run_made(app, api, redis, worker):
    archive = stored_file(api, many_entries(), "many.zip", "application/zip")
    before = storage_objects(app)
    listener = EventListener(redis, api.account_id)
    task_id = api.post("/tasks", json={"type": "FileDecompress", "parameters": {"fileId": archive["id"]}}
                       ).get_json()["taskId"]
    wait_for(listener, task_id, ("task.progress",))
    assert api.post(f"/tasks/{task_id}/pause").status_code == 200
    assert wait_for(listener, task_id)["type"] == "task.paused"
    first_run = checkpoint_of(app, task_id)["fileIds"]
    assert first_run and api.get(f"/files/{first_run[0]}").status_code == 200
    assert api.post(f"/tasks/{task_id}/cancel").status_code == 200  # the worker undoes the paused run
    assert wait_for(listener, task_id)["type"] == "task.cancelled"
    listener.close()
    assert api.get(f"/tasks/{task_id}").get_json()["status"] == "Cancelled"
    assert_nothing_left(app, api, archive, before)
