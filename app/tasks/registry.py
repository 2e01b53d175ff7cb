"""Task types. Each has a name (the seed's TaskType), a marshmallow schema that validates its
parameters before anything is queued, and a function that does the work, called by the job
with a TaskContext. The registry lives on the app (`app.extensions["drive.task_types"]`), so
web and workers built by the same factory know the same types.

A deployment adds its own type in a few lines (see the README):

    def shout(ctx):
        ctx.results["text"] = ctx.parameters["text"].upper()

    register_task_type(app, "Shout", ShoutSchema, shout)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from flask import current_app
from marshmallow import Schema


@dataclass(frozen=True)
class TaskType:
    name: str
    schema: type[Schema]
    run: Callable
    display_name: str
    prepare: Callable | None = None  # (account_id, parameters) -> parameters to store; may raise ApiError
    discard: Callable | None = None  # (ctx) -> None: undo what a paused run left, when it is cancelled


def register_task_type(app, name: str, schema: type[Schema], run: Callable, *, display_name: str | None = None,
                       prepare: Callable | None = None, discard: Callable | None = None) -> TaskType:
    task_type = TaskType(name=name, schema=schema, run=run, display_name=display_name or name, prepare=prepare,
                         discard=discard)
    app.extensions.setdefault("drive.task_types", {})[name] = task_type
    return task_type


def task_types(app=None) -> dict[str, TaskType]:
    return (app or current_app).extensions.get("drive.task_types", {})


def get_task_type(name: str, app=None) -> TaskType | None:
    return task_types(app).get(name)
