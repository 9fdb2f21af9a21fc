"""Operations endpoints: /healthz, /readyz, /metrics."""
from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify
from sqlalchemy import func, select, text

from hub import metrics
from hub.models import Outbox
from hub.runtime import current_runtime

logger = logging.getLogger(__name__)

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


def _database_ok() -> bool:
    try:
        with current_runtime().engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - readiness reports, it does not raise
        return False


def _redis_ok() -> bool:
    try:
        return bool(current_runtime().redis().ping())
    except Exception:  # noqa: BLE001 - readiness reports, it does not raise
        return False


@bp.get("/readyz")
def readyz():
    checks = {"database": _database_ok(), "redis": _redis_ok()}
    status = 200 if all(checks.values()) else 503
    return jsonify({"status": "ok" if status == 200 else "unavailable", "checks": checks}), status


def _refresh_gauges() -> None:
    runtime = current_runtime()
    try:
        from rq import Queue

        from hub import defaults

        metrics.QUEUE_DEPTH.set(Queue(defaults.QUEUE_NAME, connection=runtime.redis()).count)
    except Exception:  # noqa: BLE001 - a scrape must not fail because Redis is down
        logger.debug("queue depth unavailable")
    try:
        with runtime.engine.connect() as conn:
            pending = conn.execute(select(func.count()).select_from(Outbox).where(Outbox.done_at.is_(None))).scalar()
        metrics.OUTBOX_PENDING.set(pending or 0)
    except Exception:  # noqa: BLE001
        logger.debug("outbox depth unavailable")


@bp.get("/metrics")
def metrics_endpoint():
    _refresh_gauges()
    body, content_type = metrics.render()
    return Response(body, content_type=content_type)
