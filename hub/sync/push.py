"""Scheduling pushes of canonical changes to the connected CRMs, coalesced per contact.

`schedule_push` (called by processing, in its transaction) upserts one `pending_push` row per
contact: the changed fields accumulate, `generation` counts the schedules and `due_at` is set once,
SYNC_PUSH_COALESCE_SECONDS after the first change, so a burst of edits becomes one write. It also
makes sure the workspace has one waiting Outbox row with job "sync_push" (available at the due
time); the relay hands it to `hub.sync.jobs.run_sync_outbox`, which calls `run_pushes`.

`claim` takes due rows under a lease (FOR UPDATE SKIP LOCKED on PostgreSQL), so two workers never
push the same contact at once; `settle` deletes a row only if no new change came in while its push
was in flight (same generation), releases it with a backoff after a retriable failure, and gives
up after SYNC_PUSH_MAX_ATTEMPTS (logged in sync_log).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select, tuple_, update

from hub import defaults
from hub.db import insert_ignoring_duplicates, is_postgres, transaction
from hub.exceptions import RetriableError
from hub.sync import connected
from hub.models import Outbox, PendingPush, SyncLog, utcnow

logger = logging.getLogger(__name__)

JOB = "sync_push"


def schedule_push(session, workspace_id: str, contact_id: str, changed_fields: set[str], origin: str) -> None:
    """Called by processing, in its transaction, after a contact's fields changed."""
    targets = set(connected.connections(session, workspace_id))
    if not targets - {origin}:
        return      # no CRM other than the one the change came from: it already holds the values
    now = utcnow()
    due = now + timedelta(seconds=defaults.SYNC_PUSH_COALESCE_SECONDS)
    for _ in range(2):    # a row another transaction adds or deletes meanwhile is found the second time
        row = session.scalar(_pending_query(session, workspace_id, contact_id))
        if row is not None:
            _merge_into(row, changed_fields, origin, due)
            ensure_job(session, workspace_id, row.due_at)
            return
        session.flush()       # the contact a change created is written before its pending row
        if insert_ignoring_duplicates(
                session, PendingPush, ["workspace_id", "contact_id"], workspace_id=workspace_id, contact_id=contact_id,
                fields=sorted(changed_fields), origins=[origin] if origin else [], generation=1, due_at=due, attempts=0):
            ensure_job(session, workspace_id, due)
            return
    raise RetriableError(f"pending push of contact {contact_id} changed twice while being scheduled")


def _pending_query(session, workspace_id: str, contact_id: str):
    query = select(PendingPush).where(PendingPush.workspace_id == workspace_id, PendingPush.contact_id == contact_id)
    return query.with_for_update() if is_postgres(session.get_bind()) else query


def _merge_into(row: PendingPush, changed_fields: set[str], origin: str, due: datetime) -> None:
    row.fields = sorted(set(row.fields or ()) | set(changed_fields))
    row.origins = sorted(set(row.origins or ()) | ({origin} if origin else set()))
    row.generation = (row.generation or 0) + 1
    row.attempts = 0
    if row.due_at is None or row.due_at > due:
        row.due_at = due


def ensure_job(session, workspace_id: str, available_at: datetime) -> None:
    """One waiting sync_push outbox row per workspace (a second one is harmless: rows are claimed)."""
    waiting = session.scalar(select(Outbox).where(
        Outbox.workspace_id == workspace_id, Outbox.job == JOB, Outbox.done_at.is_(None),
        Outbox.enqueued_at.is_(None)).limit(1))
    if waiting is None:
        session.add(Outbox(workspace_id=workspace_id, job=JOB, payload={"workspace_id": workspace_id},
                           available_at=available_at, attempts=0))
    elif waiting.available_at > available_at:
        waiting.available_at = available_at


# --- the push job ---------------------------------------------------------------------------------

@dataclass
class Claimed:
    contact_id: str
    fields: set[str]
    origins: set[str]
    generation: int
    attempts: int


def claim(runtime, workspace_id: str, limit: int = defaults.SYNC_PUSH_MAX_CONTACTS) -> list[Claimed]:
    """Lease the due rows of a workspace (plus those due within one coalescing window)."""
    now = utcnow()
    horizon = now + timedelta(seconds=defaults.SYNC_PUSH_COALESCE_SECONDS)
    with transaction(runtime.engine) as session:
        query = (select(PendingPush).where(
            PendingPush.workspace_id == workspace_id, PendingPush.due_at <= horizon,
            or_(PendingPush.claimed_until.is_(None), PendingPush.claimed_until < now))
            .order_by(PendingPush.due_at).limit(limit))
        if is_postgres(runtime.engine):
            query = query.with_for_update(skip_locked=True)
        rows = session.scalars(query).all()
        lease = now + timedelta(seconds=defaults.SYNC_PUSH_LEASE_SECONDS)
        for row in rows:
            row.claimed_until = lease
        return [Claimed(r.contact_id, set(r.fields or ()), set(r.origins or ()), r.generation, r.attempts)
                for r in rows]


def settle(session, workspace_id: str, done: list[Claimed], retry: list[Claimed], retry_after: float = 0.0) -> None:
    """In the results transaction: finished rows go (unless changed meanwhile), failed ones wait."""
    now = utcnow()
    for batch in (done[i:i + 500] for i in range(0, len(done), 500)):
        session.execute(delete(PendingPush).where(
            PendingPush.workspace_id == workspace_id,
            tuple_(PendingPush.contact_id, PendingPush.generation).in_([(d.contact_id, d.generation) for d in batch])))
        # Rows still there changed while their push was in flight: push them again at once.
        session.execute(update(PendingPush).where(
            PendingPush.workspace_id == workspace_id, PendingPush.contact_id.in_([d.contact_id for d in batch]))
            .values(claimed_until=None))
    for item in retry:
        attempts = item.attempts + 1
        if attempts >= defaults.SYNC_PUSH_MAX_ATTEMPTS:
            session.execute(delete(PendingPush).where(
                PendingPush.workspace_id == workspace_id, PendingPush.contact_id == item.contact_id,
                PendingPush.generation == item.generation))
            session.add(SyncLog(workspace_id=workspace_id, target="hub", operation="push.give_up",
                                object_ids=[item.contact_id], status="error",
                                error=f"gave up after {attempts} attempts"))
            continue
        backoff = defaults.SYNC_PUSH_BACKOFF_SECONDS
        delay = max(backoff[min(attempts - 1, len(backoff) - 1)], retry_after)
        session.execute(update(PendingPush).where(
            PendingPush.workspace_id == workspace_id, PendingPush.contact_id == item.contact_id)
            .values(claimed_until=None, attempts=attempts, due_at=now + timedelta(seconds=delay)))


def next_due(runtime, workspace_id: str) -> datetime | None:
    with transaction(runtime.engine) as session:
        return session.scalar(select(func.min(PendingPush.due_at)).where(PendingPush.workspace_id == workspace_id))


def run_pushes(runtime, workspace_id: str, connectors: dict | None = None) -> dict:
    """Push every due contact of the workspace (bounded rounds); re-arm the job for what waits."""
    from hub.sync import engine

    totals: dict[str, int] = {}
    for _ in range(defaults.SYNC_PUSH_MAX_ROUNDS):
        claimed = claim(runtime, workspace_id)
        if not claimed:
            break
        counts = engine.push(runtime, workspace_id, claimed, connectors=connectors)
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value
    due = next_due(runtime, workspace_id)
    if due is not None:
        with transaction(runtime.engine) as session:
            ensure_job(session, workspace_id, max(due, utcnow()))
    return totals
