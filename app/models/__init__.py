"""SQLAlchemy models: the source of truth for tasks, chunks, files, pools, bundles, quotas,
push subscriptions."""
from app.models.bundle import Bundle
from app.models.cloud_file import CloudFile
from app.models.pool import Pool
from app.models.push_subscription import PushSubscription
from app.models.quota import Quota
from app.models.task import FINISHED, Task, TaskStatus
from app.models.upload_task import UploadChunk, UploadStatus, UploadTask

__all__ = [
    "FINISHED", "Bundle", "CloudFile", "Pool", "PushSubscription", "Quota", "Task", "TaskStatus", "UploadChunk",
    "UploadStatus", "UploadTask",
]
