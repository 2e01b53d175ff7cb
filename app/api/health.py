"""GET /health/uploads: database, Redis, queue lengths, workers; 503 when a part is down
(no worker counts as down: uploads could not complete)."""
from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, jsonify
from rq import Worker

from app.extensions import db
from app.redis_client import get_redis
from jobs.queues import QUEUE_NAMES, get_queue

health = Blueprint("health", __name__)


@health.get("/health/uploads")
def health_uploads():
    report = {"status": "ok", "database": {"status": "ok"}, "redis": {"status": "ok"}}
    try:
        db.session.execute(sa.text("SELECT 1"))
        db.session.rollback()
    except Exception as error:  # noqa: BLE001 - any failure means down
        db.session.rollback()
        report["database"] = {"status": "down", "error": type(error).__name__}
    try:
        redis = get_redis()
        redis.ping()
        report["queues"] = {name: get_queue(name).count for name in QUEUE_NAMES}
        report["workers"] = len(Worker.all(connection=redis))
    except Exception as error:  # noqa: BLE001
        report["redis"] = {"status": "down", "error": type(error).__name__}
    down = any(report[part]["status"] != "ok" for part in ("database", "redis")) or not report.get("workers")
    report["status"] = "down" if down else "ok"
    response = jsonify(report)
    response.status_code = 503 if down else 200
    return response
