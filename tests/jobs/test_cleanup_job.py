"""The scheduler enqueues cleanup and a real worker runs it."""
from datetime import timedelta

import sqlalchemy as sa

from app.extensions import db
from app.models import UploadStatus, UploadTask
from app.models.types import utcnow
from tests.conftest import process_env
from tests.support import MIB, EventListener, flask_command, random_bytes, start_process


def test_scheduler_runs_cleanup_on_the_worker(api, app, redis, settings, worker, tmp_path):
    data = random_bytes(MIB + 10)
    task_id = api.create(data, chunkSize=MIB).get_json()["taskId"]
    assert api.send_chunk(task_id, 0, data[:MIB]).status_code == 200
    with app.app_context():
        db.session.execute(sa.update(UploadTask).where(UploadTask.task_id == task_id).values(
            last_activity=utcnow() - timedelta(hours=48)))
        db.session.commit()
    listener = EventListener(redis, api.account_id)
    scheduler = start_process(flask_command("scheduler"), process_env(settings), str(tmp_path / "scheduler.log"),
                              ready_marker="Registered")
    try:
        packets = listener.until("upload.failed", timeout=60)
    finally:
        scheduler.stop()
        listener.close()
    assert packets[-1]["data"]["taskId"] == task_id
    with app.app_context():
        task = db.session.scalar(sa.select(UploadTask).where(UploadTask.task_id == task_id))
        assert task.status == UploadStatus.Expired and task.quota_reserved == 0
    assert api.get(f"/files/upload/resume/{task_id}").get_json()["uploadedChunks"] == [0]  # rows stay for history
