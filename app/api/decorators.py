"""View decorators that declare what a view reads and answers; the OpenAPI document is built
from the same declarations (app/openapi.py)."""
from __future__ import annotations

import functools
import json
import re

from flask import Response, request
from marshmallow import ValidationError

from app.errors import BadRequest, PayloadTooLarge

SPEC_ATTR = "_openapi"
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _spec(view) -> dict:
    if not hasattr(view, SPEC_ATTR):
        setattr(view, SPEC_ATTR, {"responses": {}})
    return getattr(view, SPEC_ATTR)


def _carry(wrapper, view):
    setattr(wrapper, SPEC_ATTR, _spec(view))
    return wrapper


MAX_JSON_BYTES = 4 * 1024 * 1024  # a BulkOperation of 10,000 ids is about 400 KB
MAX_JSON_DEPTH = 32  # no body of this API nests deeper than a few levels


def _no_duplicate_keys(pairs: list) -> dict:
    """object_pairs_hook: a key given twice is refused. Were the last one silently kept (as
    json.loads does), a proxy or a client library that keeps the first would see another body."""
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise BadRequest(f"The key {key[:100]!r} appears twice in a JSON object", code="INVALID_JSON")
        seen.add(key)
    return dict(pairs)


def _check_json_values(data) -> None:
    """Refuse nesting deeper than MAX_JSON_DEPTH (INVALID_JSON), and strings that JSON can
    spell but the database cannot store: PostgreSQL's text and jsonb refuse U+0000 and
    unpaired surrogates such as "\\ud800" (VALIDATION_ERROR naming the field, as marshmallow
    would). Iterative: a deep body cannot exhaust the stack here."""
    stack = [(data, ())]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_JSON_DEPTH:
            raise BadRequest(f"The JSON body nests deeper than {MAX_JSON_DEPTH} levels", code="INVALID_JSON")
        if isinstance(value, dict):
            for key, item in value.items():
                if not _storable(key):
                    _refuse_string(path + (key,), "A key may not contain U+0000 or an unpaired surrogate.")
                stack.append((item, path + (key,)))
        elif isinstance(value, list):
            stack.extend((item, path + (str(index),)) for index, item in enumerate(value))
        elif isinstance(value, str) and not _storable(value):
            _refuse_string(path, "May not contain U+0000 or an unpaired surrogate.")


def _refuse_string(path: tuple, message: str):
    messages: dict | list = [message]
    for key in reversed(path):
        messages = {key: messages}
    raise ValidationError(messages)


def _storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")  # fails on an unpaired surrogate
    except UnicodeEncodeError:
        return False
    return True


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")  # json.loads takes NaN and Infinity unless told not to


def _json_body() -> dict:
    """The request's JSON object, read strictly: UTF-8 (RFC 8259), at most MAX_JSON_BYTES
    (else 413), no duplicate keys, no NaN or Infinity, at most MAX_JSON_DEPTH levels (else 400
    INVALID_JSON; 415 for another content type), no string the database cannot store (else 400
    VALIDATION_ERROR)."""
    if not request.is_json:
        raise BadRequest("Send a JSON body with Content-Type: application/json", code="INVALID_JSON", status=415)
    request.max_content_length = MAX_JSON_BYTES  # werkzeug: 413 for a longer Content-Length
    raw = request.get_data(cache=True)
    if len(raw) >= MAX_JSON_BYTES:  # a chunked body is cut at the limit rather than refused
        raise PayloadTooLarge(f"A JSON body may be at most {MAX_JSON_BYTES - 1} bytes", code="PAYLOAD_TOO_LARGE")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadRequest("The body is not UTF-8", code="INVALID_JSON") from error
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
    except RecursionError as error:
        raise BadRequest(f"The JSON body nests deeper than {MAX_JSON_DEPTH} levels", code="INVALID_JSON") from error
    except ValueError as error:  # json.JSONDecodeError, or a number too long to convert
        raise BadRequest("The body is not valid JSON", code="INVALID_JSON") from error
    if not isinstance(data, dict):
        raise BadRequest("The body is not a JSON object", code="INVALID_JSON")
    _check_json_values(data)
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


def _query(schema) -> dict:
    """The query parameters `schema` knows, each given once and free of control characters:
    a repeated one is refused rather than one of its values picked (a cache or proxy may
    pick another), and a NUL could not even be compared with a database column."""
    known = {field.data_key or name for name, field in schema.fields.items()}
    errors = {}
    for key in known.intersection(request.args):
        values = request.args.getlist(key)
        if len(values) > 1:
            errors[key] = ["Give this parameter once."]
        elif CONTROL_CHARACTERS.search(values[0]):
            errors[key] = ["Control characters are not allowed."]
    if errors:
        raise ValidationError(errors)
    return request.args.to_dict()


def arguments(schema_class):
    """Load the query string with `schema_class`; the view gets it as its first argument."""
    schema = schema_class()

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            return view(schema.load(_query(schema)), *args, **kwargs)

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
