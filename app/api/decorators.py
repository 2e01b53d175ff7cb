"""View decorators that declare what a view reads and answers; the OpenAPI document is built
from the same declarations (app/openapi.py)."""
from __future__ import annotations

import functools

from flask import Response, request

from app.errors import BadRequest

SPEC_ATTR = "_openapi"


def _spec(view) -> dict:
    if not hasattr(view, SPEC_ATTR):
        setattr(view, SPEC_ATTR, {"responses": {}})
    return getattr(view, SPEC_ATTR)


def _carry(wrapper, view):
    setattr(wrapper, SPEC_ATTR, _spec(view))
    return wrapper


def _json_body():
    if not request.is_json:
        raise BadRequest("Send a JSON body with Content-Type: application/json", code="INVALID_JSON", status=415)
    try:
        data = request.get_json(silent=True)
    except RecursionError:
        data = None
    if not isinstance(data, dict):
        raise BadRequest("The body is not a JSON object", code="INVALID_JSON")
    return data


def body(schema_class):
    """Load the JSON body with `schema_class`; the view gets it as its first argument."""
    schema = schema_class()

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            return view(schema.load(_json_body()), *args, **kwargs)

        _spec(view)["body"] = schema_class
        return _carry(wrapper, view)

    return decorator


def arguments(schema_class):
    """Load the query string with `schema_class`; the view gets it as its first argument."""
    schema = schema_class()

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            return view(schema.load(request.args.to_dict()), *args, **kwargs)

        _spec(view)["query"] = schema_class
        return _carry(wrapper, view)

    return decorator


def response(schema_class, status: int = 200, description: str = "OK", many: bool = False):
    """Dump what the view returns with `schema_class`. A view may return (value, headers)."""
    schema = schema_class(many=many) if schema_class else None

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            result = view(*args, **kwargs)
            if isinstance(result, Response):  # another documented outcome, made by the view
                return result
            headers = {}
            if isinstance(result, tuple):
                result, headers = result
            if schema is None:
                return "", status, headers
            return schema.dump(result), status, headers

        _spec(view)["responses"][status] = (schema_class, description, many)
        return _carry(wrapper, view)

    return decorator


def other_responses(mapping: dict):
    """Document further outcomes: {status: (schema or None, description)}."""

    def decorator(view):
        for status, (schema_class, description) in mapping.items():
            _spec(view)["responses"][status] = (schema_class, description, False)
        return view

    return decorator
