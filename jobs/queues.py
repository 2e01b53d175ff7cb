"""Queues per priority band, listened to in this order: high (>= 67), default, low (< 34).

QUEUE_PREFIX (empty by default) prefixes the names, so several deployments, or a test that
needs a worker of its own, can share one Redis database."""
from __future__ import annotations

from flask import current_app
from rq import Queue

from app.redis_client import get_redis

QUEUE_NAMES = ("high", "default", "low")


def queue_for_priority(priority: int) -> str:
    if priority >= 67:
        return "high"
    if priority < 34:
        return "low"
    return "default"


def get_queue(name: str) -> Queue:
    """The queue `name` (a band, or any other name) of this deployment."""
    return Queue(current_app.config["QUEUE_PREFIX"] + name, connection=get_redis())
