"""/openapi.json and the interactive page /docs."""
from __future__ import annotations

from flask import current_app, jsonify, render_template_string, url_for

from app.api import api, api_prefix
from app.openapi import build_spec

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Drive API</title>
<link rel="stylesheet" href="{{ static }}/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="{{ static }}/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "{{ spec }}", dom_id: "#ui", persistAuthorization: true});</script>
</body></html>"""


@api.get("/openapi.json")
def openapi_json():
    """The OpenAPI 3 document of this API."""
    return jsonify(build_spec(current_app, api_prefix()))


@api.get("/docs")
def docs():
    """Swagger UI over /openapi.json."""
    return render_template_string(PAGE, static=url_for("swagger_assets.static", filename="").rstrip("/"),
                                  spec=api_prefix() + "/openapi.json")
