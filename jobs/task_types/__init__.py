"""The built-in task types of the seed, registered on the app by the factory."""
from __future__ import annotations

from app.tasks.registry import register_task_type


def register_builtin_task_types(app) -> None:
    from jobs.task_types import compress  # noqa: PLC0415

    register_task_type(app, "FileCompress", compress.CompressParameters, compress.run,
                       display_name="Compress Files", prepare=compress.prepare)
