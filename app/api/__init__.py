"""The API blueprint, registered twice: under /api and, for gateways, under /drive."""
from __future__ import annotations

from flask import Blueprint, request

from app.auth import authenticate_request

api = Blueprint("api", __name__)

PUBLIC_ENDPOINTS = {"openapi_json", "docs"}


@api.before_request
def _authenticate():
    endpoint = (request.endpoint or "").rsplit(".", 1)[-1]
    if endpoint in PUBLIC_ENDPOINTS or request.method == "OPTIONS":
        return
    authenticate_request()


def api_prefix() -> str:
    """The prefix this request came in under, for URLs handed back to the client."""
    return request.script_root + ("/drive" if request.blueprint == "drive" else "/api")


from app.api import bundles, docs, files, pools, push, tasks, uploads  # noqa: E402,F401  - routes register on import
