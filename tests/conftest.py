"""Fixtures: one fresh database schema and one fresh Redis keyspace per test session.

- DATABASE_URL set (PostgreSQL): a new schema `t_<random>` in that database, dropped at the end.
  Unset: a new SQLite file. Migrations build the schema either way (upgrade to head).
- REDIS_URL set: a database number of that server claimed for this session and flushed.
  Unset: an embedded redis-server of the session's own.
- `worker` is a real `flask worker` (RQ) process; `live_server` a real gunicorn.
Tests isolate by account: each makes its own account ids, so order never matters.
"""
from __future__ import annotations

import os
import secrets
import uuid

import pytest
from config import Config
from tests.support import (
    ROOT,
    ApiClient,
    claim_redis_db,
    create_postgres_schema,
    drop_postgres_schema,
    flask_command,
    free_port,
    release_redis_db,
    start_process,
)

JWT_SECRET = "test-secret-" + secrets.token_hex(24)


@pytest.fixture(scope="session")
def settings(tmp_path_factory):
    """The environment every process of this test session shares."""
    from app.embedded_redis import ensure_embedded_redis, stop_embedded_redis  # noqa: PLC0415

    base = tmp_path_factory.mktemp("drive")
    instance = str(base / "instance")
    os.makedirs(instance, exist_ok=True)
    env = {
        "INSTANCE_PATH": instance,
        "STORAGE_UPLOADS_PATH": str(base / "storage"),
        "JWT_SECRET": JWT_SECRET,
        "UPLOAD_COMPLETE_WAIT_SECONDS": "20",
        "LOG_LEVEL": "INFO",
        # Web Push: a VAPID key pair of this session; push services on 127.0.0.1 (tests/jobs/test_push.py)
        "PUSH_ALLOW_INSECURE_ENDPOINTS": "true",
        "TASK_TYPE_MODULES": "tests.custom_task_type",  # a deployment's own task type (test_task_custom.py)
    }
    from app.services.push import generate_vapid_keys  # noqa: PLC0415

    env["VAPID_PRIVATE_KEY"], env["VAPID_PUBLIC_KEY"] = generate_vapid_keys()
    database_url = os.environ.get("DATABASE_URL")
    schema = None
    if database_url:
        schema = "t_" + secrets.token_hex(6)
        env["DATABASE_URL"] = create_postgres_schema(database_url, schema)
    else:
        env["DATABASE_URL"] = "sqlite:///" + str(base / "drive.sqlite3")
    redis_base = os.environ.get("REDIS_URL")
    env["REDIS_URL"] = claim_redis_db(redis_base, f"tests-{os.getpid()}") if redis_base else ensure_embedded_redis(instance)
    yield env
    if redis_base:
        release_redis_db(redis_base, env["REDIS_URL"])
    else:
        stop_embedded_redis(instance)
    if schema:
        drop_postgres_schema(database_url, schema)


@pytest.fixture(scope="session")
def app(settings):
    import flask_migrate  # noqa: PLC0415

    from app import create_app  # noqa: PLC0415

    application = create_app(Config.from_env(settings, TESTING=True))
    with application.app_context():
        flask_migrate.upgrade()
    return application


@pytest.fixture()
def app_context(app):
    with app.app_context():
        yield app


@pytest.fixture()
def redis(app):
    from app.redis_client import get_redis  # noqa: PLC0415

    return get_redis(app)


def process_env(settings, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(settings)
    env.update(extra)
    env["PYTHONPATH"] = ROOT
    return env


@pytest.fixture(scope="session")
def worker(app, settings, tmp_path_factory):
    """A real `flask worker` (RQ) process for the whole session."""
    log = str(tmp_path_factory.mktemp("logs") / "worker.log")
    process = start_process(flask_command("worker", "--name", f"test-{uuid.uuid4().hex[:8]}"),
                            process_env(settings), log, ready_marker="Listening on")
    yield process
    process.stop()


@pytest.fixture(scope="session")
def live_server(app, settings, worker, tmp_path_factory):
    """gunicorn with several processes and threads, as in production; its base URL."""
    port = free_port()
    log = str(tmp_path_factory.mktemp("logs") / "gunicorn.log")
    process = start_process(
        [os.path.join(os.path.dirname(os.sys.executable), "gunicorn"), "--workers", "3", "--worker-class", "app.gunicorn_worker.DriveThreadWorker",
         "--threads", "8", "--bind", f"127.0.0.1:{port}", "--timeout", "120", "--graceful-timeout", "3",
         "wsgi:app"],
        process_env(settings), log, ready_marker="Booting worker",
    )
    yield f"http://127.0.0.1:{port}"
    process.stop()


@pytest.fixture()
def runner(app):
    return app.test_cli_runner()


@pytest.fixture()
def client(app):
    return app.test_client()


def make_token(app, account_id, **kwargs) -> str:
    from app.auth import issue_token  # noqa: PLC0415

    return issue_token(account_id, app=app, **kwargs)


@pytest.fixture()
def make_api(app, client):
    """make_api() → an ApiClient for a new account; make_api(account_id, prefix='/drive')."""

    def factory(account_id: uuid.UUID | None = None, prefix: str = "/api") -> ApiClient:
        account_id = account_id or uuid.uuid4()
        return ApiClient(client, make_token(app, account_id), account_id, prefix)

    return factory


@pytest.fixture()
def api(make_api):
    return make_api()
