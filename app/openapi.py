"""The OpenAPI 3 document, built from the schemas the views declare (app/api/decorators.py)."""
from __future__ import annotations

import re

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema, fields

from app.api.decorators import SPEC_ATTR
from app.schemas.base import camelcase

_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


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
    return spec.to_dict()
