"""One error envelope for every failure: `{code, message, status, details}`.

Services raise `ApiError` (or a subclass); the handlers registered here turn it, werkzeug's
HTTP errors, marshmallow validation errors and anything unexpected into the envelope. An
unexpected exception is logged with the request id and answered as a 500 without internal text.
"""
from __future__ import annotations

import logging

from flask import g, jsonify
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    status = 400
    code = "BAD_REQUEST"
    message = "Bad request"

    def __init__(self, message=None, *, code=None, status=None, details=None, headers=None):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.code = code or self.code
        self.status = status or self.status
        self.details = details or {}
        self.headers = headers or {}


class BadRequest(ApiError):
    status, code, message = 400, "BAD_REQUEST", "Bad request"


class Unauthorized(ApiError):
    status, code, message = 401, "UNAUTHORIZED", "Authentication required"


class Forbidden(ApiError):
    status, code, message = 403, "FORBIDDEN", "Not allowed"


class NotFound(ApiError):
    status, code, message = 404, "NOT_FOUND", "Not found"


class Conflict(ApiError):
    status, code, message = 409, "CONFLICT", "Conflict"


class Gone(ApiError):
    status, code, message = 410, "GONE", "Gone"


class PayloadTooLarge(ApiError):
    status, code, message = 413, "PAYLOAD_TOO_LARGE", "Payload too large"


class ServiceUnavailable(ApiError):
    status, code, message = 503, "SERVICE_UNAVAILABLE", "Service temporarily unavailable"


class InsufficientStorage(ApiError):
    status, code, message = 507, "INSUFFICIENT_STORAGE", "The storage is full"


_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    409: "CONFLICT",
    411: "LENGTH_REQUIRED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    416: "RANGE_NOT_SATISFIABLE",
    429: "TOO_MANY_REQUESTS",
}


def envelope(status, code, message, details=None, headers=None):
    response = jsonify({"code": code, "message": message, "status": status, "details": details or {}})
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def register_error_handlers(app):
    @app.errorhandler(ApiError)
    def handle_api_error(error: ApiError):
        return envelope(error.status, error.code, error.message, error.details, error.headers)

    @app.errorhandler(ValidationError)
    def handle_validation_error(error: ValidationError):
        return envelope(400, "VALIDATION_ERROR", "The request is not valid", {"fields": error.messages})

    @app.errorhandler(HTTPException)
    def handle_http_error(error: HTTPException):
        status = error.code or 500
        code = _HTTP_CODES.get(status, "HTTP_ERROR")
        headers = dict(error.get_headers()) if status == 405 else {}
        headers.pop("Content-Type", None)
        return envelope(status, code, error.description or error.name, {}, headers)

    @app.errorhandler(Exception)
    def handle_unexpected(error: Exception):
        request_id = getattr(g, "request_id", None)
        log.exception("unexpected error (request %s)", request_id)
        return envelope(500, "INTERNAL_ERROR", "Something went wrong on our side",
                        {"requestId": request_id})
