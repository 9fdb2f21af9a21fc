"""Operations endpoints: /healthz (process up), /readyz (database and Redis reachable), /metrics."""
from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify
from redis.exceptions import RedisError
from rq import Queue
from rq.registry import FailedJobRegistry
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from hub import defaults, metrics
from hub.models import Event, Outbox, utcnow
from hub.runtime import current_runtime

logger = logging.getLogger(__name__)

bp = Blueprint("ops", __name__)

# What "cannot reach it" looks like for each dependency (a refused or timed-out socket is an OSError).
DATABASE_ERRORS = (SQLAlchemyError, OSError)
REDIS_ERRORS = (RedisError, OSError)


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


def _database_ok() -> bool:
    try:
        with current_runtime().engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except DATABASE_ERRORS as exc:
        logger.warning("readiness: database unreachable: %s", type(exc).__name__)
        return False


def _redis_ok() -> bool:
    try:
        return bool(current_runtime().redis().ping())
    except REDIS_ERRORS as exc:
        logger.warning("readiness: redis unreachable: %s", type(exc).__name__)
        return False


READINESS_CHECKS = {"database": _database_ok, "redis": _redis_ok}


@bp.get("/readyz")
def readyz():
    """200 when every dependency answers; otherwise 503 naming the ones that did not."""
    checks = {name: "ok" if check() else "unavailable" for name, check in READINESS_CHECKS.items()}
    failed = sorted(name for name, state in checks.items() if state != "ok")
    body = {"status": "unavailable" if failed else "ok", "checks": checks}
    if failed:
        body["failed"] = failed
    return jsonify(body), 503 if failed else 200


def _refresh_queue_gauges(runtime) -> None:
    try:
        connection = runtime.redis()
        queues = [Queue(name, connection=connection) for name in defaults.QUEUE_NAMES]
        metrics.QUEUE_DEPTH.set(sum(queue.count for queue in queues))
        metrics.FAILED_JOBS.set(sum(FailedJobRegistry(queue=queue).count for queue in queues))
    except REDIS_ERRORS as exc:  # a scrape must not fail because Redis is down
        logger.debug("queue gauges unavailable: %s", type(exc).__name__)


def _refresh_database_gauges(runtime) -> None:
    try:
        with runtime.engine.connect() as conn:
            pending, oldest = conn.execute(
                select(func.count(), func.min(Outbox.created_at)).where(Outbox.done_at.is_(None))).one()
            failed = conn.execute(select(func.count()).select_from(Event).where(Event.status == "failed")).scalar()
    except DATABASE_ERRORS as exc:
        logger.debug("database gauges unavailable: %s", type(exc).__name__)
        return
    metrics.OUTBOX_PENDING.set(pending or 0)
    metrics.OUTBOX_OLDEST_SECONDS.set(_age_seconds(oldest))
    metrics.EVENTS_FAILED.set(failed or 0)


def _age_seconds(created_at) -> float:
    if created_at is None:
        return 0.0
    if created_at.tzinfo is None:        # SQLite aggregates come back naive (UTC)
        from datetime import timezone

        created_at = created_at.replace(tzinfo=timezone.utc)
    return max(0.0, (utcnow() - created_at).total_seconds())


@bp.get("/metrics")
def metrics_endpoint():
    runtime = current_runtime()
    _refresh_queue_gauges(runtime)
    _refresh_database_gauges(runtime)
    body, content_type = metrics.render()
    return Response(body, content_type=content_type)
