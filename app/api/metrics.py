"""GET /metrics (not under /api): Prometheus' text format, or OpenMetrics when the scraper
asks for it. What the processes counted comes from their files (app/metrics.py); what is true
now (uploads by status, jobs waiting, finalize durations) is read here at scrape time.
Registered by app/metrics.py's init_metrics only when METRICS_ENABLED is on; with
METRICS_TOKEN set, a scraper must send it as a bearer token.
"""
from __future__ import annotations

import hmac
import logging
import os

import sqlalchemy as sa
from flask import Blueprint, current_app, request

from app.errors import Unauthorized
from app.metrics import ENV, finalize_histogram

log = logging.getLogger(__name__)

metrics = Blueprint("metrics", __name__)


@metrics.get("/metrics")
def scrape():
    """Every metric, summed over the processes of this server."""
    from prometheus_client import CollectorRegistry  # noqa: PLC0415 - after the app set ENV
    from prometheus_client.exposition import choose_encoder  # noqa: PLC0415
    from prometheus_client.multiprocess import MultiProcessCollector  # noqa: PLC0415

    _authorize(current_app.config["METRICS_TOKEN"])
    registry = CollectorRegistry()
    directory = os.environ.get(ENV)
    if directory:
        os.makedirs(directory, exist_ok=True)
        MultiProcessCollector(registry, path=directory)
    registry.register(StateCollector(current_app._get_current_object()))
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return current_app.response_class(encode(registry), content_type=content_type)


def _authorize(token: str) -> None:
    if not token:
        return
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    headers = {"WWW-Authenticate": 'Bearer realm="metrics"'}
    if scheme.lower() != "bearer" or not given.strip():
        raise Unauthorized("Send 'Authorization: Bearer <METRICS_TOKEN>'", headers=headers)
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Unauthorized("The metrics token is not valid", code="INVALID_TOKEN", headers=headers)


class StateCollector:
    """What is true now, read when scraped, so it is right however many processes run. A
    source that cannot be read is reported as down (drive_metrics_source_up 0), not as a 500."""

    def __init__(self, app):
        self.app = app

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415

        up = GaugeMetricFamily("drive_metrics_source_up", "Whether /metrics could read the source",
                               labels=["source"])
        for source, read in (("database", self._database), ("redis", self._redis)):
            try:
                families = list(read())
            except Exception:  # noqa: BLE001 - down: say so, and serve the rest
                log.warning("metrics: %s unreadable", source, exc_info=True)
                families = []
            yield from families
            up.add_metric([source], 1 if families else 0)
        yield up

    def _database(self):
        from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415

        from app.extensions import db  # noqa: PLC0415
        from app.models import UploadStatus, UploadTask  # noqa: PLC0415

        try:
            counts = dict(db.session.execute(
                sa.select(UploadTask.status, sa.func.count()).where(UploadTask.deleted_at.is_(None))
                .group_by(UploadTask.status)).all())
        finally:
            db.session.rollback()
        uploads = GaugeMetricFamily("drive_uploads", "Upload tasks by status (forgotten ones excluded)",
                                    labels=["status"])
        for status in UploadStatus:
            uploads.add_metric([status.name], counts.get(status.value, 0))
        yield uploads

    def _redis(self):
        from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily  # noqa: PLC0415

        from app.redis_client import get_redis  # noqa: PLC0415
        from jobs.queues import QUEUE_NAMES, get_queue  # noqa: PLC0415

        depth = GaugeMetricFamily("drive_queue_depth", "Jobs waiting in each RQ queue (priority band)",
                                  labels=["queue"])
        for name in QUEUE_NAMES:
            depth.add_metric([name], get_queue(name).count)
        finalize = HistogramMetricFamily("drive_upload_finalize_duration_seconds",
                                         "Time a worker took to verify and publish an upload",
                                         labels=["outcome"])
        for outcome, (buckets, total) in finalize_histogram(get_redis(self.app)).items():
            finalize.add_metric([outcome], buckets, sum_value=total)
        yield depth
        yield finalize
