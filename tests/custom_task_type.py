"""A deployment's own task type, as the README shows: loaded by every process of the test
session through TASK_TYPE_MODULES=tests.custom_task_type (see tests/conftest.py)."""
from marshmallow import fields

from app.schemas.base import CamelSchema
from app.tasks.registry import register_task_type


class ShoutParameters(CamelSchema):
    text = fields.String(required=True)


def shout(ctx):
    ctx.step(50, {"half": True})
    ctx.results["text"] = ctx.parameters["text"].upper()


def register(app):
    register_task_type(app, "Shout", ShoutParameters, shout, display_name="Shout")
