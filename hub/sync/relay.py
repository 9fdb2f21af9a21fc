"""The outbox relay: hands committed work to RQ. If Redis is down, rows wait and are drained later.

A row is marked enqueued (not done) here; the job marks it done when its effects commit. A row
whose lease runs out without being done (lost job, killed worker) is enqueued again; jobs are
idempotent, so a second delivery changes nothing.
"""
from __future__ import annotations

import logging
import time
from datetime import timedelta

from redis.exceptions import RedisError
from rq import Queue
from sqlalchemy import or_, select, update

from hub import defaults
from hub.db import is_postgres, transaction
from hub.models import Outbox, utcnow

logger = logging.getLogger(__name__)

JOB_FUNCTION = "hub.sync.jobs.process_outbox"
# Outbox.job -> the RQ job function its rows go to (rows of one kind and workspace share a job).
JOB_FUNCTIONS = {
    "process_events": JOB_FUNCTION,
    "sync_push": "hub.sync.jobs.run_sync_outbox",
    "sync_poll": "hub.sync.jobs.run_sync_outbox",
    "evaluate_rules": "hub.rules.jobs.run_rules_outbox",
    "rule_effects": "hub.rules.jobs.run_rules_outbox",
    "rules_decay": "hub.rules.jobs.run_rules_outbox",
    "rules_sla": "hub.rules.jobs.run_rules_outbox",
}


def _ready_rows(session, engine, limit: int):
    now = utcnow()
    lease_cutoff = now - timedelta(seconds=defaults.OUTBOX_LEASE_SECONDS)
    query = (
        select(Outbox.id, Outbox.workspace_id, Outbox.payload, Outbox.job)
        .where(Outbox.done_at.is_(None), Outbox.available_at <= now,
               or_(Outbox.enqueued_at.is_(None), Outbox.enqueued_at < lease_cutoff))
        .order_by(Outbox.id)
        .limit(limit)
    )
    if is_postgres(engine):
        query = query.with_for_update(skip_locked=True)
    return session.execute(query).all()


def _group_into_jobs(rows) -> list[tuple[str, list[int]]]:
    """(job function, outbox ids) per job: one kind, one workspace, at most RELAY_EVENTS_PER_JOB events."""
    jobs: list[tuple[str, list[int]]] = []
    current: dict[tuple[str, str], tuple[list[int], int]] = {}
    for outbox_id, workspace_id, payload, kind in rows:
        function = JOB_FUNCTIONS.get(kind or "process_events", JOB_FUNCTION)
        size = len((payload or {}).get("event_ids", ())) or 1
        ids, count = current.get((function, workspace_id), ([], 0))
        if ids and count + size > defaults.RELAY_EVENTS_PER_JOB:
            jobs.append((function, ids))
            ids, count = [], 0
        ids.append(outbox_id)
        current[(function, workspace_id)] = (ids, count + size)
    jobs.extend((function, ids) for (function, _), (ids, _) in current.items() if ids)
    return jobs


def relay_once(runtime, queue: Queue | None = None, limit: int = defaults.RELAY_BATCH_ROWS) -> int:
    """Enqueue one pass of ready outbox rows. Returns the number of rows handed to RQ.

    Raises RedisError when Redis is unreachable; nothing is marked in that case.
    """
    queue = queue or Queue(defaults.QUEUE_NAME, connection=runtime.redis())
    with transaction(runtime.engine) as session:
        rows = _ready_rows(session, runtime.engine, limit)
        if not rows:
            return 0
        jobs = _group_into_jobs(rows)
        queue.enqueue_many([
            Queue.prepare_data(function, args=(ids,), timeout=defaults.JOB_TIMEOUT_SECONDS,
                               result_ttl=0, failure_ttl=7 * 24 * 3600)
            for function, ids in jobs
        ])
        session.execute(
            update(Outbox).where(Outbox.id.in_([r[0] for r in rows]))
            .values(enqueued_at=utcnow(), attempts=Outbox.attempts + 1)
        )
    return len(rows)


def drain(runtime, queue: Queue | None = None) -> int:
    """Relay until nothing is ready (used by tests and `hub replay`)."""
    total = 0
    while True:
        moved = relay_once(runtime, queue)
        total += moved
        if not moved:
            return total


def run_forever(runtime, stop=lambda: False) -> None:
    """The `hub relay` loop: poll the outbox; wait and retry while Redis is down."""
    logger.info("relay started")
    queue = Queue(defaults.QUEUE_NAME, connection=runtime.redis())
    while not stop():
        try:
            moved = relay_once(runtime, queue)
        except RedisError as exc:
            logger.warning("redis unavailable, outbox rows wait: %s", type(exc).__name__)
            time.sleep(defaults.RELAY_REDIS_DOWN_SECONDS)
            continue
        except Exception:  # noqa: BLE001 - the relay must outlive a database blip; it logs and retries
            logger.exception("relay pass failed; retrying")
            time.sleep(defaults.RELAY_REDIS_DOWN_SECONDS)
            continue
        if not moved:
            time.sleep(defaults.RELAY_IDLE_SECONDS)
