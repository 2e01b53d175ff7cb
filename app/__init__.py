"""The application factory."""
from __future__ import annotations

import logging
import os
import uuid

from flask import Flask, g, request

from config import Config


def create_app(config: Config | None = None) -> Flask:
    config = config or Config.from_env()
    app = Flask(__name__, instance_path=os.path.abspath(config.INSTANCE_PATH or "instance"),
                instance_relative_config=False)
    app.config.update(config.to_flask(app.instance_path))
    app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": app.config["LIVE_PING_INTERVAL_SECONDS"],
                                         "max_message_size": 64 * 1024}
    os.makedirs(app.config["INSTANCE_PATH"], exist_ok=True)
    logging.basicConfig(level=app.config["LOG_LEVEL"].upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

    from app.database import configure_engine
    from app.errors import register_error_handlers
    from app.extensions import db, migrate, sock
    from app.metrics import init_metrics
    from app.redis_client import init_redis

    db.init_app(app)
    migrate.init_app(app, db, render_as_batch=True, compare_type=True, directory=os.path.join(os.path.dirname(os.path.dirname(__file__)), "migrations"))
    sock.init_app(app)
    configure_engine(app)
    init_redis(app)
    register_error_handlers(app)
    register_request_id(app)
    register_edge(app)
    register_blueprints(app)
    init_metrics(app)
    register_cli(app)
    register_task_types(app)
    return app


def register_task_types(app: Flask) -> None:
    """The built-in types, then a deployment's own: each module named in TASK_TYPE_MODULES
    (comma-separated import paths) has its `register(app)` called. Web and workers build their
    app with this factory, so both know the same types."""
    import importlib

    from jobs.task_types import register_builtin_task_types

    register_builtin_task_types(app)
    for module_path in filter(None, (m.strip() for m in app.config.get("TASK_TYPE_MODULES", "").split(","))):
        importlib.import_module(module_path).register(app)


def register_edge(app: Flask) -> None:
    """What sits between the client and the routes: trusted proxy headers, rate limits (after
    the request id, so a 429 carries one), CORS and the audit log."""
    from app.audit import init_audit
    from app.cors import init_cors
    from app.proxy import init_proxy_fix
    from app.ratelimit import init_rate_limits

    init_proxy_fix(app)
    init_rate_limits(app)
    init_cors(app)
    init_audit(app)


def register_request_id(app: Flask) -> None:
    @app.before_request
    def _request_id():
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if 0 < len(incoming) <= 128 and incoming.isprintable() else uuid.uuid4().hex

    @app.after_request
    def _echo_request_id(response):
        response.headers["X-Request-ID"] = getattr(g, "request_id", "")
        return response


def register_blueprints(app: Flask) -> None:
    from flask import Blueprint
    import flask_swagger_ui

    from app.api import api
    from app.api.health import health
    from app.live.routes import live

    app.register_blueprint(api, url_prefix="/api")
    app.register_blueprint(api, url_prefix="/drive", name="drive")
    app.register_blueprint(health)
    app.register_blueprint(live)
    app.register_blueprint(live, url_prefix="/api", name="api_live")
    app.register_blueprint(live, url_prefix="/drive", name="drive_live")
    assets = Blueprint("swagger_assets", __name__, static_folder=os.path.join(
        os.path.dirname(flask_swagger_ui.__file__), "dist"), static_url_path="/api/docs/assets")
    app.register_blueprint(assets)


def register_cli(app: Flask) -> None:
    from app.cli import register

    register(app)
