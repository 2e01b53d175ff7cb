"""The OpenAPI 3 document, built from the schemas the views declare (app/api/decorators.py)."""
from __future__ import annotations

import re

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema, fields

from app.api.decorators import SPEC_ATTR
from app.schemas.base import camelcase

_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
# What the two public routes answer (they declare no schema: one is this document itself)
PAGES = {
    "openapi_json": {"200": {"description": "This document", "content": {"application/json": {
        "schema": {"type": "object"}}}}},
    "docs": {"200": {"description": "Swagger UI", "content": {"text/html": {"schema": {"type": "string"}}}}},
}


class ErrorSchema(Schema):
    code = fields.String(metadata={"example": "UPLOAD_NOT_FOUND"})
    message = fields.String()
    status = fields.Integer()
    details = fields.Dict()


def _schema_name_resolver(schema) -> str:
    cls = schema if isinstance(schema, type) else type(schema)
    name = cls.__name__
    return name[:-6] if name.endswith("Schema") else name


def _operation(view, rule, method) -> dict:
    meta = getattr(view, SPEC_ATTR, {"responses": {}})
    doc = (view.__doc__ or "").strip()
    summary, _, description = doc.partition("\n")
    operation = {
        "summary": summary.strip(),
        "description": " ".join(description.split()),
        "operationId": f"{rule.endpoint.split('.')[-1]}",
        "parameters": [{"in": "path", "name": camelcase(name), "required": True,
                        "schema": {"type": "integer", "minimum": 0} if name == "chunk_index" else {"type": "string"}}
                       for name in sorted(rule.arguments)],
        "responses": {"default": {"description": "An error", "content": {"application/json": {"schema": ErrorSchema}}}},
    }
    if "query" in meta:
        operation["parameters"].append({"in": "query", "schema": meta["query"]})
    if "body" in meta:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": meta["body"]}}}
    if rule.endpoint.endswith("upload_chunk"):
        operation["requestBody"] = {"required": True, "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {"schema": {"type": "object", "required": ["chunk"], "properties": {
                "chunk": {"type": "string", "format": "binary"}}}},
        }}
    for status, entry in PAGES.get(rule.endpoint.split(".")[-1], {}).items():
        operation["responses"][status] = entry
    for status, (schema_class, description, many) in meta["responses"].items():
        entry = {"description": description}
        if schema_class is not None:
            entry["content"] = {"application/json": {"schema": schema_class(many=True) if many else schema_class}}
        operation["responses"][str(status)] = entry
    if rule.endpoint.split(".")[-1] not in ("openapi_json", "docs"):
        operation["security"] = [{"bearer": []}]
    return operation


def build_spec(app, prefix: str = "/api") -> dict:
    spec = APISpec(
        title="Drive", version="1.0.0", openapi_version="3.0.3",
        info={"description": "Resumable chunked uploads, files, pools and bundles."},
        servers=[{"url": prefix}],
        plugins=[MarshmallowPlugin(schema_name_resolver=_schema_name_resolver)],
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    paths: dict[str, dict] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.endpoint.startswith("api.") or not rule.rule.startswith("/api/"):
            continue
        view = app.view_functions[rule.endpoint]
        path = _PARAM.sub(lambda m: "{" + camelcase(m.group(1)) + "}", rule.rule[len("/api"):])
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(view, rule, method)
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    document = spec.to_dict()
    _document_task_types(app, document)
    return document


def _document_task_types(app, document: dict) -> None:
    """`type` of a new task is one of the types registered in this app (custom ones included),
    and each type's `parameters` are described by a component `<Type>Parameters`."""
    from app.tasks.registry import task_types  # noqa: PLC0415 - the registry lives on the app

    schemas = document.get("components", {}).get("schemas", {})
    if "CreateTask" not in schemas:
        return
    types = task_types(app)
    schemas["CreateTask"]["properties"]["type"]["enum"] = sorted(types)
    for name, task_type in sorted(types.items()):  # one spec each: two types may share a schema class
        helper = APISpec(title="-", version="-", openapi_version="3.0.3",
                         plugins=[MarshmallowPlugin(schema_name_resolver=_schema_name_resolver)])
        helper.components.schema(f"{name}Parameters", schema=task_type.schema)
        for component_name, component in helper.to_dict()["components"]["schemas"].items():
            schemas.setdefault(component_name, component)
    schemas["CreateTask"]["properties"]["parameters"]["description"] = (
        "The parameters of the task's type: see the component <type>Parameters (e.g. FileCompressParameters)")
