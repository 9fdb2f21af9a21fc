"""RQ jobs: thin functions taking ids and calling a service function.

`process_outbox` runs each event of its outbox rows in its own transaction (effects + status
commit together), so a job killed midway re-runs safely: processed events are skipped.
"""
from __future__ import annotations

import logging
import time
from datetime import timedelta

from sqlalchemy import select

from hub import defaults, metrics
from hub.db import is_postgres, transaction
from hub.models import Event, Outbox, utcnow
from hub.runtime import Runtime

logger = logging.getLogger(__name__)

TERMINAL = frozenset({"processed", "failed", "ignored", "malformed"})

_runtime: Runtime | None = None


def runtime() -> Runtime:
    """The worker's runtime, built once per process from the environment."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime.from_env()
    return _runtime


def process_outbox(outbox_ids: list[int]) -> dict:
    rt = runtime()
    counts = {"processed": 0, "ignored": 0, "retry": 0, "failed": 0, "skipped": 0}
    for outbox_id in outbox_ids:
        with transaction(rt.engine) as session:
            row = session.get(Outbox, outbox_id)
            if row is None or row.done_at is not None:
                continue
            event_ids = list((row.payload or {}).get("event_ids", ()))
        for event_id in event_ids:
            counts[process_one(rt, event_id)] += 1
        _settle_outbox(rt, outbox_id, event_ids)
    return counts


def process_one(rt: Runtime, event_id: int) -> str:
    """Apply one event; its effects and its status commit together."""
    from hub.sync.processing import process_event

    started = time.time()
    try:
        with transaction(rt.engine) as session:
            event = _lock_event(session, rt, event_id)
            if event is None:
                return "skipped"
            event.last_error = None          # before processing: an 'ignored' event carries its reason here
            status = process_event(session, rt, event)
            event.status = status
            event.attempts += 1
            event.processed_at = utcnow()
            received = event.received_at
    except Exception as exc:  # noqa: BLE001 - recorded on the event, retried with backoff, then 'failed'
        logger.warning("event %s failed: %s", event_id, type(exc).__name__, exc_info=True)
        return _record_failure(rt, event_id, exc)
    metrics.EVENTS_PROCESSED.labels(status=status).inc()
    if received is not None:
        metrics.PROCESSING_LATENCY.observe(max(0.0, started - received.timestamp()) + (time.time() - started))
    return status


def _lock_event(session, rt: Runtime, event_id: int) -> Event | None:
    query = select(Event).where(Event.id == event_id)
    if is_postgres(rt.engine):
        query = query.with_for_update(skip_locked=True)
    event = session.scalar(query)
    if event is None or event.status != "pending":
        return None
    return event


def _record_failure(rt: Runtime, event_id: int, exc: Exception) -> str:
    with transaction(rt.engine) as session:
        event = session.get(Event, event_id)
        if event is None:
            return "skipped"
        event.attempts += 1
        event.last_error = f"{type(exc).__name__}: {str(exc)[:500]}"
        if event.attempts >= defaults.EVENT_MAX_ATTEMPTS:
            event.status = "failed"
            metrics.EVENTS_PROCESSED.labels(status="failed").inc()
            return "failed"
        return "retry"


def _settle_outbox(rt: Runtime, outbox_id: int, event_ids: list[int]) -> None:
    """Done when every event is terminal; otherwise hand it out again after a backoff."""
    with transaction(rt.engine) as session:
        row = session.get(Outbox, outbox_id)
        if row is None or row.done_at is not None:
            return
        events = session.execute(select(Event.status, Event.attempts).where(Event.id.in_(event_ids))).all()
        open_attempts = [attempts for status, attempts in events if status not in TERMINAL]
        if not open_attempts:
            row.done_at = utcnow()
            return
        backoff = defaults.EVENT_RETRY_BACKOFF_SECONDS
        delay = backoff[min(max(open_attempts) - 1, len(backoff) - 1)] if max(open_attempts) else 1
        row.available_at = utcnow() + timedelta(seconds=delay)
        row.enqueued_at = None


# --- sync jobs (hub.sync.push / hub.sync.polling), dispatched by Outbox.job --------------------------

def run_sync_outbox(outbox_ids: list[int]) -> dict:
    """The RQ job for sync outbox rows: push due contacts ("sync_push") or poll a CRM ("sync_poll").

    A row is done when its run returns; a vendor outage (RetriableError) leaves it for a later
    pass after its lease; the pending pushes themselves carry their own retry state.
    """
    from sqlalchemy import update

    from hub.sync.polling import run_poll_outbox
    from hub.sync.push import run_pushes

    rt = runtime()
    runners = {"sync_push": lambda row: run_pushes(rt, row.workspace_id),
               "sync_poll": lambda row: run_poll_outbox(rt, row)}
    totals: dict = {}
    for outbox_id in outbox_ids:
        with transaction(rt.engine) as session:
            row = session.get(Outbox, outbox_id)
            if row is None or row.done_at is not None or row.job not in runners:
                continue
            session.expunge(row)
        totals[outbox_id] = runners[row.job](row)
        with transaction(rt.engine) as session:
            session.execute(update(Outbox).where(Outbox.id == outbox_id).values(done_at=utcnow()))
    return totals
