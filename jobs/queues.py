"""Queues per priority band, listened to in this order: high (>= 67), default, low (< 34)."""
from __future__ import annotations

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
    return Queue(name, connection=get_redis())
