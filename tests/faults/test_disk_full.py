"""A full chunk store: the pool's folder is a 6 MiB filesystem of the test's own (tmpfs), filled
up by the test. A chunk that does not fit is a 507 STORAGE_FULL and leaves nothing (no file,
no row, the quota as it was); once space is freed the same chunk is stored. Finalizing on a
full disk (the marker of a composed file, or an encrypted file's copy) fails the same way and
keeps the upload whole, so complete succeeds once there is room again."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import uuid

import pytest
import sqlalchemy as sa

from app.models import Pool
from tests.conftest import make_token
from tests.faults.clients import assert_rows_match_storage, partial_writes
from tests.support import MIB, ApiClient, assert_error, create_task, database, invoke, quota_usage, random_bytes, sha256

DISK = 6 * MIB  # room for the chunks and an encrypted copy of them
SIZE = 2 * MIB + 1000  # chunks of 1 MiB, 1 MiB and 1000 bytes
PASSWORD = "correct horse battery staple"


@pytest.fixture()
def small_disk(tmp_path):
    """A small filesystem (DISK) mounted for this test alone, unmounted when it ends."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(mount)], check=True)
    yield mount
    if subprocess.run(["umount", str(mount)]).returncode != 0:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


@pytest.fixture()
def small_pool_api(app, client, runner, small_disk):
    """An ApiClient of a new account whose private pool lives on `small_disk`; its pool id."""
    account_id = uuid.uuid4()
    name = f"small-{account_id.hex[:8]}"
    created = invoke(runner, "pools", "create", name, "--root", small_disk, "--account", account_id)
    assert created.exit_code == 0, created.output
    with database(app) as session:
        pool_id = session.scalar(sa.select(Pool.id).where(Pool.name == name))
    return ApiClient(client, make_token(app, account_id), account_id), str(pool_id)


def fill(disk, leave: int = 0) -> None:
    """Take all the free space of `disk` but `leave` bytes (whole pages)."""
    block = bytes(64 * 1024)
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            os.write(fd, block)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    if leave:
        os.truncate(disk / "filler", os.path.getsize(disk / "filler") - leave)
    assert shutil.disk_usage(disk).free == leave


def free_space(disk) -> None:
    os.unlink(disk / "filler")


def chunk(data: bytes, index: int) -> bytes:
    return data[index * MIB:(index + 1) * MIB]


def progress(api, task_id: str) -> tuple[int, int]:
    body = api.get(f"/files/upload/progress/{task_id}").get_json()
    return body["chunksUploaded"], body["bytesUploaded"]


def test_a_chunk_on_a_full_disk_is_a_clean_507_and_is_stored_once_there_is_room(app, worker, small_pool_api,
                                                                                  small_disk):
    api, pool_id = small_pool_api
    data = random_bytes(SIZE)
    task_id = create_task(api, data, chunkSize=MIB, poolId=pool_id)["taskId"]
    assert api.send_chunk(task_id, 0, chunk(data, 0)).status_code == 200
    usage = quota_usage(app, api.account_id)

    fill(small_disk, leave=MIB // 2)  # half of the next chunk fits, then the disk is full
    for multipart in (False, True):
        refused = api.send_chunk(task_id, 1, chunk(data, 1), multipart=multipart)
        assert_error(refused, 507, "STORAGE_FULL")
        assert partial_writes(app, task_id) == {}  # the half that was written is gone
        assert_rows_match_storage(app, task_id, data, MIB, [0])
        assert progress(api, task_id) == (1, MIB)
        assert quota_usage(app, api.account_id) == usage

    free_space(small_disk)
    for index in (1, 2):
        assert api.send_chunk(task_id, index, chunk(data, index)).status_code == 200
    assert_rows_match_storage(app, task_id, data, MIB, [0, 1, 2])
    completed = api.complete(task_id)
    assert completed.status_code == 200, completed.get_json()
    file = completed.get_json()
    assert (file["hash"], file["size"]) == (sha256(data), SIZE)
    assert sha256(api.get(f"/files/{file['id']}/download").data) == sha256(data)


@pytest.mark.parametrize("encrypted", [False, True], ids=["composed", "encrypted copy"])
def test_finalizing_on_a_full_disk_keeps_the_upload_and_completes_once_there_is_room(
        app, worker, small_pool_api, small_disk, encrypted):
    api, pool_id = small_pool_api
    data = random_bytes(SIZE)
    fields = {"encryptPassword": PASSWORD} if encrypted else {}
    task_id = create_task(api, data, chunkSize=MIB, poolId=pool_id, **fields)["taskId"]
    for index in range(3):
        assert api.send_chunk(task_id, index, chunk(data, index)).status_code == 200
    usage = quota_usage(app, api.account_id)

    fill(small_disk)
    refused = api.complete(task_id)
    assert_error(refused, 507, "STORAGE_FULL")
    assert api.get(f"/files/upload/progress/{task_id}").get_json()["status"] == "InProgress"
    assert_rows_match_storage(app, task_id, data, MIB, [0, 1, 2])
    assert quota_usage(app, api.account_id) == usage
    assert [path for path in (small_disk / "files").rglob("*") if path.is_file()] == []  # no half a file

    free_space(small_disk)
    completed = api.complete(task_id)
    assert completed.status_code == 200, completed.get_json()
    file = completed.get_json()
    assert (file["hash"], file["size"], file["isEncrypted"]) == (sha256(data), SIZE, encrypted)
    headers = {"X-Encrypt-Password": PASSWORD} if encrypted else None
    assert sha256(api.get(f"/files/{file['id']}/download", headers=headers).data) == sha256(data)
