"""/tasks: generic background tasks (the seed's Generic Task System)."""
from __future__ import annotations

from flask import g

from app.api import api
from app.api.decorators import arguments, body, other_responses, response
from app.schemas.tasks import CreateTaskSchema, TaskListQuerySchema, TaskSchema, TaskStatsSchema
from app.services import tasks


@api.post("/tasks")
@body(CreateTaskSchema)
@response(TaskSchema, 201, "The task, queued")
@other_responses({400: (None, "UNKNOWN_TASK_TYPE / VALIDATION_ERROR (details.fields.parameters)")})
def create_generic_task(data):
    """Create a task of a registered type; its parameters are validated before it is queued."""
    return tasks.create_task(g.account_id, data)


@api.get("/tasks")
@arguments(TaskListQuerySchema)
@response(TaskSchema, 200, "The account's tasks; X-Total holds the count", many=True)
def list_generic_tasks(query):
    """List tasks by type and status, sorted and paged."""
    rows, total = tasks.list_tasks(g.account_id, query)
    return rows, {"X-Total": str(total)}


@api.get("/tasks/stats")
@response(TaskStatsSchema)
def generic_task_stats():
    """Counts by status and type, and the average progress of running tasks."""
    return tasks.task_stats(g.account_id)


@api.get("/tasks/<task_id>")
@response(TaskSchema)
def get_generic_task(task_id):
    """A task (an upload shows as a task of type FileUpload)."""
    return tasks.show_task(task_id, g.account_id)


@api.post("/tasks/<task_id>/pause")
@response(TaskSchema)
@other_responses({409: (None, "INVALID_TASK_TRANSITION")})
def pause_generic_task(task_id):
    """Pause: a queued task at once, a running one at its next step (its checkpoint kept)."""
    return tasks.pause_task(task_id, g.account_id)


@api.post("/tasks/<task_id>/resume")
@response(TaskSchema)
@other_responses({409: (None, "INVALID_TASK_TRANSITION")})
def resume_generic_task(task_id):
    """Resume a paused task from its checkpoint."""
    return tasks.resume_task(task_id, g.account_id)


@api.post("/tasks/<task_id>/cancel")
@response(TaskSchema)
@other_responses({409: (None, "INVALID_TASK_TRANSITION")})
def cancel_generic_task(task_id):
    """Cancel: a queued or paused task at once, a running one at its next step."""
    return tasks.cancel_task(task_id, g.account_id)


@api.delete("/tasks/<task_id>")
@response(None, 204, "Deleted")
@other_responses({409: (None, "TASK_NOT_FINISHED")})
def delete_generic_task(task_id):
    """Delete a finished (completed, failed, cancelled or expired) task."""
    tasks.delete_task(task_id, g.account_id)
