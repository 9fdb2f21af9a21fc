"""The outbox relay: hands committed work to RQ. If Redis is down, rows wait and are drained later.

A row is marked enqueued (not done) here; the job marks it done when its effects commit. A row
whose lease runs out without being done (lost job, killed worker) is enqueued again; jobs are
idempotent, so a second delivery changes nothing.

Each kind of row goes to one of three queues (JOB_ROUTES), which workers take in order: live
changes and CRM sync first, then lead rules, then bulk work (backfilled records, mass replays), so
a backfill of a whole CRM never delays a change on its way to the other CRM. A queue holding its
QUEUE_HIGH_WATER of jobs gets no more until its workers catch up: the backlog waits in the outbox,
where its leases do not run out while it waits (handing a waiting row out again would copy it in
the queue and, after OUTBOX_MAX_DELIVERIES, fail its events as lost).
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
from hub.store import BULK_PROCESS_JOB, PROCESS_JOB

logger = logging.getLogger(__name__)

JOB_FUNCTION = "hub.sync.jobs.process_outbox"
BULK_JOB_FUNCTION = "hub.sync.jobs.process_bulk_outbox"
SYNC_FUNCTION = "hub.sync.jobs.run_sync_outbox"
RULES_FUNCTION = "hub.rules.jobs.run_rules_outbox"
LIVE, RULES, BULK = defaults.QUEUE_NAME, defaults.RULES_QUEUE_NAME, defaults.BULK_QUEUE_NAME

# Outbox.job -> (the RQ job function its rows go to, its queue); rows of one kind and workspace share a job.
JOB_ROUTES = {
    PROCESS_JOB: (JOB_FUNCTION, LIVE),
    BULK_PROCESS_JOB: (BULK_JOB_FUNCTION, BULK),
    "sync_push": (SYNC_FUNCTION, LIVE),
    "sync_poll": (SYNC_FUNCTION, LIVE),
    "sync_delete": (SYNC_FUNCTION, LIVE),
    "evaluate_rules": (RULES_FUNCTION, RULES),
    "rule_effects": (RULES_FUNCTION, RULES),
    "rules_decay": (RULES_FUNCTION, RULES),
    "rules_sla": (RULES_FUNCTION, RULES),
}
EVENT_JOBS = frozenset({PROCESS_JOB, BULK_PROCESS_JOB})     # rows listing events (payload "event_ids")


def route(kind: str | None) -> tuple[str, str]:
    """(job function, queue name) of an outbox row of this kind."""
    return JOB_ROUTES.get(kind or PROCESS_JOB, JOB_ROUTES[PROCESS_JOB])


def queues_for(connection) -> dict[str, Queue]:
    """The hub's RQ queues by name (defaults.QUEUE_NAMES)."""
    return {name: Queue(name, connection=connection) for name in defaults.QUEUE_NAMES}


def held_back_kinds(queues: dict[str, Queue]) -> list[str]:
    """Outbox.job kinds whose queue holds its QUEUE_HIGH_WATER of jobs or more: not handed out this pass."""
    full = {name for name, queue in queues.items() if queue.count >= defaults.QUEUE_HIGH_WATER[name]}
    return sorted(kind for kind, (_, name) in JOB_ROUTES.items() if name in full)


# What a relay pass waits out instead of dying: Redis or the database being unreachable.
OUTAGES = {
    "redis": (RedisError,),
    "database": (OperationalError, InterfaceError, PoolTimeoutError),
}


def _ready_rows(session, engine, limit: int, lease_seconds: float, held_back: list[str] = ()):
    now = utcnow()
    lease_cutoff = now - timedelta(seconds=lease_seconds)
    query = (
        select(Outbox.id, Outbox.workspace_id, Outbox.payload, Outbox.job, Outbox.attempts, Outbox.enqueued_at)
        .where(Outbox.done_at.is_(None), Outbox.available_at <= now,
               or_(Outbox.enqueued_at.is_(None), Outbox.enqueued_at < lease_cutoff))
        .order_by(Outbox.id)
        .limit(limit)
    )
    if held_back:
        query = query.where(Outbox.job.not_in(held_back))
    if is_postgres(engine):
        query = query.with_for_update(skip_locked=True)
    return session.execute(query).all()


def _group_into_jobs(rows) -> list[tuple[str, str, list[int]]]:
    """(job function, queue name, outbox ids) per job: one route, one workspace, at most
    RELAY_EVENTS_PER_JOB events (RELAY_ROWS_PER_JOB rows for the queues it names)."""
    jobs: list[tuple[str, str, list[int]]] = []
    current: dict[tuple[str, str, str], tuple[list[int], int]] = {}
    for outbox_id, workspace_id, payload, kind, *_ in rows:
        function, queue_name = route(kind)
        key = (function, queue_name, workspace_id)
        size = len((payload or {}).get("event_ids", ())) or 1
        ids, count = current.get(key, ([], 0))
        if ids and count + size > defaults.RELAY_ROWS_PER_JOB.get(queue_name, defaults.RELAY_EVENTS_PER_JOB):
            jobs.append((function, queue_name, ids))
            ids, count = [], 0
        ids.append(outbox_id)
        current[key] = (ids, count + size)
    jobs.extend((function, queue_name, ids) for (function, queue_name, _), (ids, _) in current.items() if ids)
    return jobs


def _fail_lost_rows(session, rows) -> list:
    """Event rows handed out OUTBOX_MAX_DELIVERIES times and found again with their lease run out
    (their worker dies on them) stop going out: their open events fail, for `hub replay --failed`.
    A row a job settled for a retry has no lease (enqueued_at is cleared) and is never failed here.
    Returns the rest."""
    lost = [row for row in rows
            if (row.job or PROCESS_JOB) in EVENT_JOBS and row.enqueued_at is not None
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
    held_back = held_back_kinds(queues)
    with transaction(runtime.engine) as session:
        rows = _fail_lost_rows(session, _ready_rows(session, runtime.engine, limit, lease_seconds, held_back))
        if not rows:
            return 0
        by_queue: dict[str, list] = {}
        for function, queue_name, ids in _group_into_jobs(rows):
            by_queue.setdefault(queue_name, []).append(
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
