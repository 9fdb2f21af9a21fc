"""RQ jobs: thin functions taking ids and calling a service function.

`process_outbox` runs each event of its outbox rows in its own transaction (effects + status
commit together), so a job killed midway re-runs safely: processed events are skipped.
`process_bulk_outbox` does the same for bulk rows (backfill, mass replay) but hands the rest of its
rows back to the outbox once it has run BULK_SLICE_SECONDS and live or rules work waits (it looks
between chunks of BULK_CHUNK_EVENTS events), so a worker busy with a backfill takes up a live
change within about that time.
"""
from __future__ import annotations

import functools
import logging
import os
import time
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from hub import defaults, metrics
from hub.db import is_postgres, one_connection_per_job, transaction
from hub.exceptions import FatalError, PayloadError, RetriableError, UnsupportedEventError
from hub.models import Event, Outbox, utcnow
from hub.runtime import Runtime

logger = logging.getLogger(__name__)

TERMINAL = frozenset({"processed", "failed", "ignored", "malformed"})

# How a failed event is treated, by error class (first match wins): "ignore" marks it ignored
# (stored, not acted on), "fatal" fails it at once, "retry" retries it with backoff up to
# EVENT_MAX_ATTEMPTS, then fails it.
FAILURE_CLASSES = (
    (UnsupportedEventError, "ignore"),
    (FatalError, "fatal"),          # the vendor refused (auth, validation): retrying cannot help
    (PayloadError, "fatal"),        # the stored event cannot be read
    (RetriableError, "retry"),      # 429/423/5xx/timeouts
    (SQLAlchemyError, "retry"),     # lock timeouts, a database blip, a unique-key race
)

# Test seam for tests/test_durability.py: a worker started with HUB_TEST_PAUSE_EVENT_ID=<id> stops
# after applying that event's effects and before committing them (writing its pid to
# HUB_TEST_PAUSE_MARKER), so a test can SIGKILL it mid-job. Never set in a deployment.
TEST_PAUSE_EVENT_ENV = "HUB_TEST_PAUSE_EVENT_ID"
TEST_PAUSE_MARKER_ENV = "HUB_TEST_PAUSE_MARKER"
TEST_PAUSE_SECONDS = 60

_runtime: Runtime | None = None


def runtime() -> Runtime:
    """The worker's runtime, built once per process from the environment."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime.from_env()
    return _runtime


def use_runtime(runtime_for_jobs: Runtime | None) -> None:
    """Jobs run in this process use this runtime (one-process runs such as `hub demo`); None: from the environment."""
    global _runtime
    _runtime = runtime_for_jobs


def one_job(job):
    """Run the job's transactions on one pooled connection (hub.db.one_connection_per_job), reading
    the workspace's set-up once (hub.sync.connected.once_per_job)."""
    from hub.sync import connected

    @functools.wraps(job)
    def run(*args, **kwargs):
        with one_connection_per_job(runtime().engine), connected.once_per_job():
            return job(*args, **kwargs)
    return run


@one_job
def process_outbox(outbox_ids: list[int], should_yield=None, chunk: int | None = None) -> dict:
    """The RQ job: apply the events of these outbox rows, then settle each row.

    `should_yield()`, asked before each `chunk` of a row's open events after the first: True hands
    this row and the rest back to the outbox."""
    rt = runtime()
    counts = {"processed": 0, "ignored": 0, "retry": 0, "failed": 0, "skipped": 0}
    for position, outbox_id in enumerate(outbox_ids):
        with transaction(rt.engine) as session:
            row = session.get(Outbox, outbox_id)
            if row is None or row.done_at is not None:
                continue
            event_ids = list((row.payload or {}).get("event_ids", ()))
            open_ids = set(session.scalars(select(Event.id).where(Event.id.in_(event_ids), Event.status == "pending")))
        todo = [event_id for event_id in event_ids if event_id in open_ids]
        counts["skipped"] += len(event_ids) - len(todo)
        retry_after, yielded, size = 0.0, False, chunk or max(len(todo), 1)
        for start in range(0, len(todo), size):
            if start and should_yield is not None and should_yield():
                yielded = True
                break
            retry_after = max(retry_after, _process_events(rt, todo[start:start + size], counts))
        _settle_outbox(rt, outbox_id, event_ids, retry_after, handed_back=yielded)
        if yielded:
            _hand_back(rt, outbox_ids[position + 1:])
            counts["yielded"] = len(outbox_ids) - position
            break
    return counts


def _process_events(rt: Runtime, event_ids: list[int], counts: dict) -> float:
    """Apply these events, counting outcomes; returns the longest wait a vendor asked for."""
    from hub.sync.owners import prepare_events

    parsed = prepare_events(rt, event_ids)   # CRM user listings happen before the transactions, never in one
    retry_after = 0.0
    for event_id in event_ids:
        outcome, wait = process_one(rt, event_id, parsed.get(event_id))
        counts[outcome] = counts.get(outcome, 0) + 1
        retry_after = max(retry_after, wait)
    return retry_after


def process_bulk_outbox(outbox_ids: list[int]) -> dict:
    """The RQ job for bulk rows: as process_outbox, handing the rest back once it has run
    BULK_SLICE_SECONDS and a job waits in a queue workers take first."""
    from rq import Queue

    rt = runtime()
    first = [Queue(name, connection=rt.redis()) for name in defaults.QUEUE_NAMES[:defaults.QUEUE_NAMES.index(
        defaults.BULK_QUEUE_NAME)]]
    started = time.monotonic()

    def should_yield() -> bool:
        return time.monotonic() - started >= defaults.BULK_SLICE_SECONDS and any(queue.count for queue in first)

    return process_outbox(outbox_ids, should_yield, chunk=defaults.BULK_CHUNK_EVENTS)


def _hand_back(rt: Runtime, outbox_ids: list[int]) -> None:
    """Rows a job did not start: the relay hands them out again at once (no lease to wait out). A
    hand-back is not a lost delivery: it does not count towards OUTBOX_MAX_DELIVERIES."""
    if not outbox_ids:
        return
    with transaction(rt.engine) as session:
        session.execute(update(Outbox).where(Outbox.id.in_(outbox_ids), Outbox.done_at.is_(None))
                        .values(enqueued_at=None, available_at=utcnow(), attempts=Outbox.attempts - 1))


def process_one(rt: Runtime, event_id: int, parsed: list | Exception | None = None) -> tuple[str, float]:
    """Apply one event; its effects and its status commit together (`parsed`: see process_event).

    Returns the outcome and, for a retry, how long the vendor asked us to wait (0 if it did not).
    """
    from hub.sync.processing import process_event

    try:
        with transaction(rt.engine) as session:
            event = _lock_event(session, rt, event_id)
            if event is None:
                return "skipped", 0.0
            event.last_error = None          # before processing: an 'ignored' event carries its reason here
            status = process_event(session, rt, event, parsed)
            _pause_for_test(session, event_id)
            event.status = status
            event.attempts += 1
            event.processed_at = utcnow()
            received = event.received_at
    except Exception as exc:  # noqa: BLE001 - classified and recorded on the event (retry, then 'failed')
        return _record_failure(rt, event_id, exc), float(getattr(exc, "retry_after", None) or 0.0)
    metrics.EVENTS_PROCESSED.labels(status=status).inc()
    if received is not None:
        metrics.PROCESSING_LATENCY.observe(max(0.0, time.time() - received.timestamp()))
    return status, 0.0


def classify_failure(exc: Exception) -> str:
    """"fatal" or "retry"; an error of no known class (a bug) is retried, then the event fails."""
    for kind, treatment in FAILURE_CLASSES:
        if isinstance(exc, kind):
            return treatment
    return "retry"


def _pause_for_test(session, event_id: int) -> None:
    if os.environ.get(TEST_PAUSE_EVENT_ENV) != str(event_id):
        return
    session.flush()                      # the effects are written, not committed
    marker = os.environ.get(TEST_PAUSE_MARKER_ENV)
    if marker:
        with open(marker, "w") as handle:
            handle.write(str(os.getpid()))
    time.sleep(TEST_PAUSE_SECONDS)
    raise RuntimeError("test pause expired without the worker being killed")


def _lock_event(session, rt: Runtime, event_id: int) -> Event | None:
    query = select(Event).where(Event.id == event_id)
    if is_postgres(rt.engine):
        query = query.with_for_update(skip_locked=True)
    event = session.scalar(query)
    if event is None or event.status != "pending":
        return None
    return event


def _record_failure(rt: Runtime, event_id: int, exc: Exception) -> str:
    """Count the attempt and keep the error; fail the event when fatal or out of attempts."""
    treatment = classify_failure(exc)
    known = any(isinstance(exc, kind) for kind, _ in FAILURE_CLASSES)
    # An unknown error is a bug: keep its traceback (logs are masked by hub.logs).
    logger.log(logging.WARNING if known else logging.ERROR, "event %s not applied (%s): %s",
               event_id, treatment, type(exc).__name__, exc_info=not known)
    with transaction(rt.engine) as session:
        event = session.get(Event, event_id)
        if event is None:
            return "skipped"
        event.attempts += 1
        event.last_error = f"{type(exc).__name__}: {str(exc)[:500]}"
        if treatment == "ignore":
            event.status = "ignored"
            event.processed_at = utcnow()
            metrics.EVENTS_PROCESSED.labels(status="ignored").inc()
            return "ignored"
        if treatment == "fatal" or event.attempts >= defaults.EVENT_MAX_ATTEMPTS:
            event.status = "failed"
            metrics.EVENTS_PROCESSED.labels(status="failed").inc()
            return "failed"
        return "retry"


def retry_delay(attempts: int, retry_after: float = 0.0) -> float:
    """Seconds before the next try after `attempts` failed ones; a vendor's Retry-After wins if longer."""
    backoff = defaults.EVENT_RETRY_BACKOFF_SECONDS
    step = backoff[min(max(attempts, 1) - 1, len(backoff) - 1)]
    return max(float(step), retry_after)


def _settle_outbox(rt: Runtime, outbox_id: int, event_ids: list[int], retry_after: float = 0.0,
                   handed_back: bool = False) -> None:
    """Done when every event is terminal; otherwise hand it out again after a backoff (at once when
    the job `handed_back` the row with events it never tried)."""
    with transaction(rt.engine) as session:
        row = session.get(Outbox, outbox_id)
        if row is None or row.done_at is not None:
            return
        events = session.execute(select(Event.status, Event.attempts).where(Event.id.in_(event_ids))).all()
        open_attempts = [attempts for status, attempts in events if status not in TERMINAL]
        if not open_attempts:
            row.done_at = utcnow()
            return
        # An event still open with no recorded attempt is held by another job (SKIP LOCKED): look again soon.
        if max(open_attempts):
            delay = retry_delay(max(open_attempts), retry_after)
        else:
            delay = 0.0 if handed_back else defaults.EVENT_RETRY_BACKOFF_SECONDS[0]
        if handed_back:
            row.attempts = max(row.attempts - 1, 0)      # as _hand_back: not a lost delivery
        row.available_at = utcnow() + timedelta(seconds=delay)
        row.enqueued_at = None


# --- sync jobs (hub.sync.push / hub.sync.polling), dispatched by Outbox.job --------------------------

@one_job
def run_outbox_rows(outbox_ids: list[int], runners: dict) -> dict:
    """Run non-event outbox rows through `runners` (Outbox.job -> fn(runtime, row)).

    A row is done once its runner has returned; the job marks its finished rows done together, when
    it ends or stops at an error (one transaction, not one per row). An error leaves its row, and
    the rows after it, for a later pass after their lease; a worker killed mid-job leaves them all,
    and the rows it had finished run again: every runner is safe to run twice (evaluations are pure,
    effects and pushes carry their own state).
    """
    rt = runtime()
    totals: dict = {}
    with transaction(rt.engine) as session:
        rows = session.scalars(select(Outbox).where(Outbox.id.in_(outbox_ids), Outbox.done_at.is_(None))).all()
        session.expunge_all()
    by_id = {row.id: row for row in rows if row.job in runners}
    finished: list[int] = []
    try:
        for outbox_id in outbox_ids:
            row = by_id.get(outbox_id)
            if row is None:
                continue
            totals[outbox_id] = runners[row.job](rt, row)
            finished.append(outbox_id)
    finally:
        if finished:
            with transaction(rt.engine) as session:
                session.execute(update(Outbox).where(Outbox.id.in_(finished)).values(done_at=utcnow()))
    return totals


def run_sync_outbox(outbox_ids: list[int]) -> dict:
    """The RQ job for sync outbox rows: push due contacts ("sync_push"), poll a CRM ("sync_poll") or delete
    records ("sync_delete", propagated deletions).

    A vendor outage (RetriableError) leaves a row for a later pass after its lease; the pending
    pushes themselves carry their own retry state.
    """
    from hub.sync.deletions import run_delete_outbox
    from hub.sync.polling import run_poll_outbox
    from hub.sync.push import run_pushes

    return run_outbox_rows(outbox_ids, {"sync_push": lambda rt, row: run_pushes(rt, row.workspace_id),
                                        "sync_poll": run_poll_outbox, "sync_delete": run_delete_outbox})
