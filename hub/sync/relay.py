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
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from hub import defaults
from hub.db import is_postgres, transaction
from hub.models import Event, Outbox, utcnow

logger = logging.getLogger(__name__)

JOB_FUNCTION = "hub.sync.jobs.process_outbox"
# Outbox.job -> the RQ job function its rows go to (rows of one kind and workspace share a job).
JOB_FUNCTIONS = {
    "process_events": JOB_FUNCTION,
    "sync_push": "hub.sync.jobs.run_sync_outbox",
    "sync_poll": "hub.sync.jobs.run_sync_outbox",
    "sync_delete": "hub.sync.jobs.run_sync_outbox",
    "evaluate_rules": "hub.rules.jobs.run_rules_outbox",
    "rule_effects": "hub.rules.jobs.run_rules_outbox",
    "rules_decay": "hub.rules.jobs.run_rules_outbox",
    "rules_sla": "hub.rules.jobs.run_rules_outbox",
}

# Job functions that go to the rules queue; workers take them only when the sync queue is empty, so
# a burst of rule evaluations never delays a change on its way to the other CRM.
RULES_FUNCTIONS = frozenset({"hub.rules.jobs.run_rules_outbox"})


def queues_for(connection) -> dict[str, Queue]:
    """The hub's RQ queues by name (defaults.QUEUE_NAMES)."""
    return {name: Queue(name, connection=connection) for name in defaults.QUEUE_NAMES}


def _queue_name(function: str) -> str:
    return defaults.RULES_QUEUE_NAME if function in RULES_FUNCTIONS else defaults.QUEUE_NAME


# What a relay pass waits out instead of dying: Redis or the database being unreachable.
OUTAGES = {
    "redis": (RedisError,),
    "database": (OperationalError, InterfaceError, PoolTimeoutError),
}


def _ready_rows(session, engine, limit: int, lease_seconds: float):
    now = utcnow()
    lease_cutoff = now - timedelta(seconds=lease_seconds)
    query = (
        select(Outbox.id, Outbox.workspace_id, Outbox.payload, Outbox.job, Outbox.attempts, Outbox.enqueued_at)
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
    for outbox_id, workspace_id, payload, kind, *_ in rows:
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


def _fail_lost_rows(session, rows) -> list:
    """Event rows handed out OUTBOX_MAX_DELIVERIES times and found again with their lease run out
    (their worker dies on them) stop going out: their open events fail, for `hub replay --failed`.
    A row a job settled for a retry has no lease (enqueued_at is cleared) and is never failed here.
    Returns the rest."""
    lost = [row for row in rows
            if (row.job or "process_events") == "process_events" and row.enqueued_at is not None
            and row.attempts >= defaults.OUTBOX_MAX_DELIVERIES]
    if not lost:
        return rows
    for row in lost:
        event_ids = (row.payload or {}).get("event_ids", [])
        logger.error("outbox row %s lost %s times; failing its open events %s", row.id, row.attempts, event_ids)
        session.execute(
            update(Event).where(Event.id.in_(event_ids), Event.status == "pending")
            .values(status="failed", last_error=f"LostJob: handed out {row.attempts} times, never finished")
        )
    lost_ids = {row.id for row in lost}
    session.execute(update(Outbox).where(Outbox.id.in_(lost_ids)).values(done_at=utcnow()))
    return [row for row in rows if row.id not in lost_ids]


def relay_once(runtime, queues: dict[str, Queue] | None = None, limit: int = defaults.RELAY_BATCH_ROWS,
               lease_seconds: float = defaults.OUTBOX_LEASE_SECONDS) -> int:
    """Enqueue one pass of ready outbox rows. Returns the number of rows handed to RQ.

    Raises RedisError when Redis is unreachable; nothing is marked in that case (the marks are
    in the same transaction, rolled back). If the commit itself fails after the enqueue, the rows
    go out again after their lease: a job delivered twice changes nothing.
    """
    queues = queues or queues_for(runtime.redis())
    with transaction(runtime.engine) as session:
        rows = _fail_lost_rows(session, _ready_rows(session, runtime.engine, limit, lease_seconds))
        if not rows:
            return 0
        by_queue: dict[str, list] = {}
        for function, ids in _group_into_jobs(rows):
            by_queue.setdefault(_queue_name(function), []).append(
                Queue.prepare_data(function, args=(ids,), timeout=defaults.JOB_TIMEOUT_SECONDS,
                                   result_ttl=0, failure_ttl=7 * 24 * 3600))
        for name, prepared in by_queue.items():
            queues[name].enqueue_many(prepared)
        session.execute(
            update(Outbox).where(Outbox.id.in_([r[0] for r in rows]))
            .values(enqueued_at=utcnow(), attempts=Outbox.attempts + 1)
        )
    return len(rows)


def drain(runtime, queues: dict[str, Queue] | None = None,
          lease_seconds: float = defaults.OUTBOX_LEASE_SECONDS) -> int:
    """Relay until nothing is ready (used by tests and `hub replay`)."""
    total = 0
    while True:
        moved = relay_once(runtime, queues, lease_seconds=lease_seconds)
        total += moved
        if not moved:
            return total


def _outage(exc: Exception) -> str | None:
    for name, kinds in OUTAGES.items():
        if isinstance(exc, kinds):
            return name
    return None


def run_forever(runtime, stop=lambda: False, lease_seconds: float = defaults.OUTBOX_LEASE_SECONDS) -> None:
    """The `hub relay` loop: poll the outbox; while Redis or the database is down, wait and retry.

    Each pass is bounded (socket and connect timeouts); waits between failed passes double up to
    RELAY_MAX_BACKOFF_SECONDS. Any other error is a bug and stops the relay loudly.
    """
    logger.info("relay started")
    queues = queues_for(runtime.redis())
    wait = defaults.RELAY_REDIS_DOWN_SECONDS
    while not stop():
        try:
            moved = relay_once(runtime, queues, lease_seconds=lease_seconds)
        except (*OUTAGES["redis"], *OUTAGES["database"]) as exc:
            logger.warning("%s unavailable, outbox rows wait %.1fs: %s", _outage(exc), wait, type(exc).__name__)
            _sleep_unless_stopped(wait, stop)
            wait = min(wait * 2, defaults.RELAY_MAX_BACKOFF_SECONDS)
            continue
        wait = defaults.RELAY_REDIS_DOWN_SECONDS
        if not moved:
            _sleep_unless_stopped(defaults.RELAY_IDLE_SECONDS, stop)


def _sleep_unless_stopped(seconds: float, stop) -> None:
    deadline = time.monotonic() + seconds
    while not stop() and time.monotonic() < deadline:
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
