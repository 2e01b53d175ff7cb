"""FileEncrypt and FileDecrypt with a real worker: the bytes round-trip, a wrong password
changes nothing, and the password is stored nowhere (task row, RQ job, events, responses)."""
from __future__ import annotations

import base64
import json
import uuid
import zlib

import pytest
import sqlalchemy as sa
from rq.job import Job

from app import crypto
from app.events import read_events
from app.models import CloudFile, Pool, Task, TaskStatus
from app.sealed import seal
from app.storage import backend_for
from tests.support import generic_task_count, MIB, EventListener, assert_error, database, random_bytes, sha256

PASSWORD = "correct horse battery " + uuid.uuid4().hex


def stored_file(api, data: bytes, name: str, **fields) -> str:
    done = api.upload(data, name=name, **fields)
    assert done.status_code == 200, done.get_json()
    return done.get_json()["id"]


def run_task(api, redis, body: dict, responses: list | None = None) -> dict:
    """Create a task, wait for its final event on the account's channel; the task as shown."""
    listener = EventListener(redis, api.account_id)
    created = api.post("/tasks", json=body)
    assert created.status_code == 201, created.get_json()
    task_id = created.get_json()["taskId"]
    while True:
        packet = listener.next(60)
        assert packet is not None, f"no end for {task_id}"
        if packet["data"].get("taskId") == task_id and packet["type"] in (
                "task.completed", "task.failed", "task.cancelled", "task.paused"):
            break
    listener.close()
    shown = api.get(f"/tasks/{task_id}")
    if responses is not None:
        responses += [created.get_data(as_text=True), shown.get_data(as_text=True)]
    return shown.get_json()


def file_row(app, file_id) -> dict:
    with database(app) as session:
        file = session.get(CloudFile, uuid.UUID(file_id))
        return {"storage_key": file.storage_key, "is_encrypted": file.is_encrypted, "hash": file.hash,
                "encryption": file.encryption, "size": file.size, "stored_size": file.stored_size,
                "pool_id": file.pool_id}


def object_exists(app, pool_id, key) -> bool:
    with database(app) as session:
        return backend_for(session.get(Pool, pool_id)).exists(key)


def download(api, file_id, password=None):
    headers = {"X-Encrypt-Password": password} if password else None
    return api.get(f"/files/{file_id}/download", headers=headers)


def test_encrypt_then_decrypt_round_trips_and_the_password_is_stored_nowhere(api, app, redis, worker):
    data = random_bytes(2 * MIB + 12345)  # three 1 MiB segments, the last one short
    small = b"tiny"
    ids = [stored_file(api, data, "big.bin"), stored_file(api, small, "tiny.txt")]
    before = [file_row(app, i) for i in ids]
    responses: list[str] = []

    task = run_task(api, redis, {"type": "FileEncrypt", "parameters": {"fileIds": ids, "password": PASSWORD}},
                    responses)
    assert task["status"] == "Completed", task
    assert task["results"]["filesProcessed"] == 2 and task["results"]["fileIds"] == ids
    assert task["parameters"] == {"fileIds": ids}  # internal parameters never shown
    for file_id, old, content in zip(ids, before, (data, small)):
        row = file_row(app, file_id)
        assert row["is_encrypted"] and row["hash"] == sha256(content) and row["size"] == len(content)
        assert row["storage_key"] != old["storage_key"] and row["stored_size"] == crypto.encrypted_size(len(content))
        assert not object_exists(app, old["pool_id"], old["storage_key"])  # the plaintext object is gone
        assert "ephemeralKey" in row["encryption"] and "publicKey" in row["encryption"]
        assert_error(download(api, file_id), 403, "PASSWORD_REQUIRED")
        assert_error(download(api, file_id, "not it"), 403, "WRONG_PASSWORD")
        got = download(api, file_id, PASSWORD)
        assert got.status_code == 200 and got.data == content
    shown = api.get(f"/files/{ids[0]}")
    responses.append(shown.get_data(as_text=True))
    assert shown.get_json()["isEncrypted"] is True

    # encrypting again is refused at creation
    assert_error(api.post("/tasks", json={"type": "FileEncrypt", "parameters": {"fileIds": ids, "password": "x"}}),
                 400, "FILE_ENCRYPTED")

    task = run_task(api, redis, {"type": "FileDecrypt", "parameters": {"fileIds": ids, "password": PASSWORD}},
                    responses)
    assert task["status"] == "Completed", task
    assert task["results"]["filesProcessed"] == 2 and task["results"]["fileIds"] == ids
    for file_id, content in zip(ids, (data, small)):
        row = file_row(app, file_id)
        assert not row["is_encrypted"] and row["encryption"] is None and row["stored_size"] == len(content)
        got = download(api, file_id)
        assert got.status_code == 200 and sha256(got.data) == sha256(content)
    assert api.get(f"/files/{ids[0]}").get_json()["isEncrypted"] is False
    assert_error(api.post("/tasks", json={"type": "FileDecrypt", "parameters": {"fileIds": ids, "password": "x"}}),
                 400, "FILE_NOT_ENCRYPTED")

    # the password is nowhere: task rows (every column), RQ jobs, events, API responses
    responses.append(api.get("/tasks").get_data(as_text=True))
    with database(app) as session:
        rows = session.scalars(sa.select(Task).where(Task.account_id == api.account_id)).all()
        assert len(rows) == 2
        for row in rows:
            for column in Task.__table__.columns:
                assert PASSWORD not in json.dumps(getattr(row, column.key), default=str), column.key
            assert not any(k.startswith("_sealed") for k in row.parameters), "sealed keys erased at the end"
        task_ids = [row.task_id for row in rows]
    for task_id in task_ids:
        key = f"rq:job:task-{task_id}"
        stored = redis.hgetall(key)
        assert stored, f"no RQ job hash {key}"
        for name, value in stored.items():
            assert PASSWORD.encode() not in value, name
            if name == b"data":
                assert PASSWORD.encode() not in zlib.decompress(value)
        job = Job.fetch(f"task-{task_id}", connection=redis)
        assert PASSWORD not in repr((job.args, job.kwargs, job.meta, job.description))
    with app.app_context():
        events = read_events(api.account_id, redis=redis)
    assert events and PASSWORD not in json.dumps(events)
    for text in responses:
        assert PASSWORD not in text and "_sealedKeys" not in text and "_encryption" not in text


def test_a_wrong_password_is_refused_at_creation_and_changes_nothing(api, app, redis, worker):
    data = random_bytes(300_000)
    done = api.upload(data, name="locked.bin", encryptPassword=PASSWORD)
    assert done.status_code == 200, done.get_json()
    file_id = done.get_json()["id"]
    before = file_row(app, file_id)
    assert before["is_encrypted"]
    body = assert_error(api.post("/tasks", json={"type": "FileDecrypt",
                                                 "parameters": {"fileIds": [file_id], "password": "wrong"}}),
                        403, "WRONG_PASSWORD")
    assert "wrong" not in json.dumps(body)
    assert generic_task_count(api) == 0
    assert file_row(app, file_id) == before
    assert download(api, file_id, PASSWORD).data == data


def test_decrypt_failing_at_run_time_fails_the_task_and_changes_nothing(api, app, redis):
    """Keys that do not open the file (as if the password were wrong when the job runs): the
    task ends Failed, the file is untouched, and the sealed secret is erased. The job is run
    in this process, as a worker would run it."""
    from app.extensions import db
    from jobs.engine import run_task as run_job

    data = random_bytes(1 * MIB + 7)
    done = api.upload(data, name="x.bin", encryptPassword=PASSWORD)
    file_id = done.get_json()["id"]
    before = file_row(app, file_id)

    with app.app_context():
        wrong_keys = json.dumps({file_id: base64.b64encode(b"\x01" * 32).decode()}).encode()
        task = Task(task_id=uuid.uuid4().hex, name="Decrypt Files", type="FileDecrypt", status=TaskStatus.Pending,
                    account_id=api.account_id, parameters={"fileIds": [file_id], "_sealedKeys": seal(
                        wrong_keys, context=api.account_id.bytes)}, results={}, checkpoint={}, priority=50)
        db.session.add(task)
        db.session.commit()
        pk = task.id
        run_job(str(pk))
        db.session.remove()
    with database(app) as session:
        task = session.get(Task, pk)
        assert task.status == TaskStatus.Failed and "no file was changed" in task.error_message
        assert "_sealedKeys" not in task.parameters
    assert file_row(app, file_id) == before
    assert download(api, file_id, PASSWORD).data == data


def test_a_cancel_in_the_middle_of_a_file_removes_the_half_written_object(api, app):
    """The conversion of one file stopped by a cancel at a step: no new object is left and the
    row is unchanged (the job's own function, run in this process)."""
    from app.extensions import db
    from app.tasks.context import TaskCancelled
    from jobs.task_types.encrypt import _convert_one

    data = random_bytes(3 * MIB)
    file_id = stored_file(api, data, "c.bin")
    before = file_row(app, file_id)
    params = crypto.new_password_params(PASSWORD)

    class Ctx:
        account_id = api.account_id

    def cancel_after_first_block(count):
        raise TaskCancelled()

    with app.app_context():
        pool = db.session.get(Pool, before["pool_id"])
        backend = backend_for(pool)
        keys_before = {k for k, _ in backend.list_objects("files")}
        db.session.rollback()
        pending: dict = {}
        with pytest.raises(TaskCancelled):
            _convert_one(Ctx(), file_id, True, lambda _id: crypto.new_file_key(params), cancel_after_first_block,
                         pending)
        assert {k for k, _ in backend.list_objects("files")} == keys_before and pending == {}
        db.session.remove()
    assert file_row(app, file_id) == before
    assert download(api, file_id).data == data


def test_validation_and_tenancy(api, make_api, worker):
    other = make_api()
    theirs = stored_file(other, b"theirs" * 10, "t.txt")
    mine = stored_file(api, b"mine" * 10, "m.txt")
    assert_error(api.post("/tasks", json={"type": "FileEncrypt", "parameters": {"fileIds": [theirs],
                                                                               "password": "p"}}),
                 404, "FILE_NOT_FOUND")
    for parameters in ({"fileIds": [mine]}, {"fileIds": [], "password": "p"}, {"fileIds": [mine], "password": ""},
                       {"fileIds": [str(uuid.uuid4())] * 101, "password": "p"}):
        assert_error(api.post("/tasks", json={"type": "FileEncrypt", "parameters": parameters}), 400,
                     "VALIDATION_ERROR")
    assert generic_task_count(api) == 0


def test_a_resumed_encrypt_goes_on_from_its_checkpoint(api, app):
    """A task whose checkpoint says one file is done converts only the rest (the job run in
    this process, as a worker would run it after a pause)."""
    from app.extensions import db
    from jobs.engine import run_task as run_job

    first, second = random_bytes(5000), random_bytes(7000)
    ids = [stored_file(api, first, "one.bin"), stored_file(api, second, "two.bin")]
    with app.app_context():
        task = Task(task_id=uuid.uuid4().hex, name="Encrypt Files", type="FileEncrypt", status=TaskStatus.Pending,
                    account_id=api.account_id, priority=50, checkpoint={"filesProcessed": 1},
                    results={"fileIds": [ids[0]], "skippedFileIds": [], "filesProcessed": 1},
                    parameters={"fileIds": ids, "_encryption": crypto.new_password_params(PASSWORD)})
        db.session.add(task)
        db.session.commit()
        pk = task.id
        run_job(str(pk))
        db.session.remove()
    with database(app) as session:
        task = session.get(Task, pk)
        assert task.status == TaskStatus.Completed and task.results["fileIds"] == ids
        assert task.results["filesProcessed"] == 2
    assert not file_row(app, ids[0])["is_encrypted"]  # the checkpoint said it was done
    assert file_row(app, ids[1])["is_encrypted"]
    assert download(api, ids[1], PASSWORD).data == second


def test_sealed_tokens_open_only_with_the_same_key_and_context(app, settings):
    from app import create_app
    from app.sealed import SealBroken, unseal
    from config import Config

    with app.app_context():
        token = seal(b"file keys", context=b"account-a")
        assert unseal(token, context=b"account-a") == b"file keys"
        assert b"file keys" not in token.encode()
        for bad_context, bad_token in ((b"account-b", token), (b"account-a", token[:-4] + "AAAA"),
                                       (b"account-a", "plain")):
            with pytest.raises(SealBroken):
                unseal(bad_token, context=bad_context)
    other = create_app(Config.from_env(dict(settings, SECRET_KEY="another-" + uuid.uuid4().hex), TESTING=True))
    with other.app_context():
        with pytest.raises(SealBroken):
            unseal(token, context=b"account-a")
