"""Wire shapes of generic tasks (the seed's PersistentTask, camelCase)."""
from __future__ import annotations

from marshmallow import fields, validate

from app.models import TaskStatus
from app.schemas.base import NO_CONTROLS, CamelSchema, Name, StrictInt, Text, UtcDateTime, status_list
from app.schemas.files import ListQuerySchema


class CreateTaskSchema(CamelSchema):
    type = fields.String(required=True, validate=validate.Length(min=1, max=64))
    name = Name(what="task name")
    description = Text(allow_none=True)
    priority = StrictInt(load_default=50, validate=validate.Range(min=0, max=100))
    estimated_duration_seconds = StrictInt(allow_none=True, validate=validate.Range(min=0))
    parameters = fields.Dict(load_default=dict)


class TaskSchema(CamelSchema):
    task_id = fields.String()
    name = fields.String()
    description = fields.String(allow_none=True)
    type = fields.String()
    status = fields.Function(lambda task: task.status_name)
    account_id = fields.UUID()
    progress = fields.Float()
    parameters = fields.Method("public_parameters")
    results = fields.Dict()
    error_message = fields.String(allow_none=True)
    priority = fields.Integer()
    estimated_duration_seconds = fields.Integer(allow_none=True)
    last_activity = UtcDateTime()
    started_at = UtcDateTime(allow_none=True)
    completed_at = UtcDateTime(allow_none=True)
    created_at = UtcDateTime()
    updated_at = UtcDateTime()

    def public_parameters(self, task) -> dict:
        """The parameters without internal ones: a key starting with "_" is for the worker only
        (e.g. a sealed key or an encryption's public parameters) and never leaves the server."""
        return {k: v for k, v in (task.parameters or {}).items() if not k.startswith("_")}


class TaskListQuerySchema(ListQuerySchema):
    type = fields.String(validate=validate.Length(max=1024), metadata={  # type names (each at most 64)
        "pattern": NO_CONTROLS, "description": "Task types, comma-separated"})
    status = status_list(TaskStatus)
    sort_by = fields.String(load_default="lastActivity", validate=validate.OneOf(
        ["name", "type", "status", "priority", "progress", "createdAt", "updatedAt", "lastActivity"]))
    sort_descending = fields.Boolean(load_default=True)


class TaskStatsSchema(CamelSchema):
    total_tasks = fields.Integer()
    by_status = fields.Dict(keys=fields.String(), values=fields.Integer())
    by_type = fields.Dict(keys=fields.String(), values=fields.Integer())
    average_progress = fields.Float()
