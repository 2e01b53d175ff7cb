"""The Redis connection of the app: a server when REDIS_URL is set, an embedded one otherwise.

Redis holds queues, events and caches only; nothing in it is the source of truth.
"""
from __future__ import annotations

from flask import current_app
from redis import Redis

from app.embedded_redis import ensure_embedded_redis


def init_redis(app) -> None:
    url = app.config["REDIS_URL"]
    if not url:
        url = ensure_embedded_redis(app.config["INSTANCE_PATH"])
        app.config["REDIS_URL"] = url
    app.extensions["drive.redis"] = Redis.from_url(
        url, socket_timeout=30, socket_connect_timeout=5, health_check_interval=30
    )


def get_redis(app=None) -> Redis:
    return (app or current_app).extensions["drive.redis"]
