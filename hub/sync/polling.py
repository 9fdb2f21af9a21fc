"""Salesforce polling: a periodic job that pulls changed Leads/Contacts through a stored cursor.

For orgs without Outbound Messages (DESIGN.md). An org opts in with `hub connect salesforce ...
--poll-interval SECONDS` (Connection.settings["poll_interval"]; 0 turns it off). The connector's
`read_changes(cursor)` queries by SystemModstamp with a lookback window and an Id tie-breaker; this
module keeps its cursor in `sync_cursor` (name "poll"), stores the records as events (dedupe keys hold
the modification time, so the lookback re-reads nothing twice), reads the org's delete log (Get Deleted; cursor
"poll_deleted") so deletions reach the hub too, and re-arms itself as an Outbox row
with job "sync_poll" every interval. Connecting and every worker start-up arm it (`arm_all`); arming
holds a lock on the connection row and adds a row only when none waits, so several workers never
start two chains, and a Redis lock keeps two deliveries of one row from polling at once.
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta

from redis.exceptions import LockError
from sqlalchemy import select, update

from hub import defaults
from hub.connectors.base import CrmConnector
from hub.db import transaction
from hub.exceptions import FatalError, RetriableError
from hub.models import Connection, Outbox, SyncCursor, utcnow
from hub.sync.snapshots import store_deleted, store_records

logger = logging.getLogger(__name__)

JOB = "sync_poll"
CURSOR_NAME = "poll"
DELETED_CURSOR_NAME = "poll_deleted"
SYSTEM = "salesforce"


def load_cursor(session, workspace_id: str, system: str, name: str) -> SyncCursor:
    row = session.scalar(select(SyncCursor).where(
        SyncCursor.workspace_id == workspace_id, SyncCursor.system == system, SyncCursor.name == name))
    if row is None:
        row = SyncCursor(workspace_id=workspace_id, system=system, name=name, cursor=None, done=0)
        session.add(row)
        session.flush()
    return row


def save_cursor(runtime, workspace_id: str, system: str, name: str, cursor: str | None, handled: int,
                finished: bool = False) -> None:
    with transaction(runtime.engine) as session:
        row = load_cursor(session, workspace_id, system, name)
        row.cursor = cursor
        row.done = (row.done or 0) + handled
        row.finished_at = utcnow() if finished else None


def poll_deleted(runtime, workspace_id: str, connector: CrmConnector) -> int:
    """Read the org's delete log for Leads and Contacts since the last poll (Get Deleted; its
    latestDateCovered is the next start); returns the number of new deletion events stored."""
    with transaction(runtime.engine) as session:
        cursor = load_cursor(session, workspace_id, SYSTEM, DELETED_CURSOR_NAME).cursor
    positions = json.loads(cursor) if cursor else {}
    now = utcnow()
    oldest = now - timedelta(days=defaults.SALESFORCE_DELETED_WINDOW_DAYS)
    first = now - timedelta(seconds=defaults.CHANGES_LOOKBACK_SECONDS)
    stored = 0
    for object_type in connector.person_objects:
        start = max(datetime.fromisoformat(positions[object_type]), oldest) if object_type in positions else first
        deleted, covered = connector.read_deleted(object_type, start, now)
        stored += len(store_deleted(runtime.engine, workspace_id, object_type, deleted).accepted)
        positions[object_type] = max(covered, start).isoformat()
    save_cursor(runtime, workspace_id, SYSTEM, DELETED_CURSOR_NAME, json.dumps(positions, sort_keys=True), stored)
    return stored


def poll_once(runtime, workspace_id: str, connector: CrmConnector, system: str = "salesforce") -> int:
    """Read every page ready now; returns the number of new events stored."""
    with transaction(runtime.engine) as session:
        cursor = load_cursor(session, workspace_id, system, CURSOR_NAME).cursor
    stored = 0
    for _ in range(defaults.CHANGES_MAX_PAGES):
        page = connector.read_changes(cursor)
        stored += len(store_records(runtime.engine, workspace_id, system, page.records, "poll").accepted)
        cursor = page.cursor
        save_cursor(runtime, workspace_id, system, CURSOR_NAME, cursor, len(page.records))
        if not page.has_more:
            break
    return stored


def poll_interval(settings: dict | None) -> float | None:
    """The connection's polling interval in seconds (`hub connect salesforce --poll-interval`), or None."""
    value = (settings or {}).get("poll_interval")
    return float(value) if value else None


def validate_interval(seconds: float) -> float:
    if seconds < 0 or (seconds and seconds < defaults.SALESFORCE_POLL_MIN_INTERVAL_SECONDS):
        raise ValueError(f"--poll-interval must be 0 (off) or at least "
                         f"{defaults.SALESFORCE_POLL_MIN_INTERVAL_SECONDS} seconds")
    return seconds


def _lock_connection(session, workspace_id: str) -> Connection | None:
    """Serialise arming per connection: a row lock on PostgreSQL, the write lock on SQLite (touching the
    row takes it), so two workers arming at once never both see "nothing waiting"."""
    session.execute(update(Connection).where(Connection.workspace_id == workspace_id, Connection.kind == SYSTEM)
                    .values(updated_at=Connection.updated_at).execution_options(synchronize_session=False))
    return session.scalar(select(Connection).where(Connection.workspace_id == workspace_id, Connection.kind == SYSTEM))


def arm(session, workspace_id: str, delay_seconds: float | None = None, exclude: int | None = None) -> bool:
    """Make sure one sync_poll outbox row waits for the workspace (`exclude`: the row running now).
    Nothing is armed when the connection does not poll (and `delay_seconds` is not given). True if added."""
    connection = _lock_connection(session, workspace_id)
    interval = poll_interval(connection.settings if connection else None)
    if connection is None or (interval is None and delay_seconds is None):
        return False
    waiting = select(Outbox.id).where(Outbox.workspace_id == workspace_id, Outbox.job == JOB, Outbox.done_at.is_(None))
    if exclude is not None:
        waiting = waiting.where(Outbox.id != exclude)
    if session.scalar(waiting.limit(1)) is not None:
        return False
    delay = interval if delay_seconds is None else delay_seconds
    session.add(Outbox(workspace_id=workspace_id, job=JOB, payload={"system": SYSTEM},
                       available_at=utcnow() + timedelta(seconds=delay), attempts=0))
    return True


def arm_all(runtime) -> int:
    """Arm polling for every connection that opted in (worker start-up; a broken chain is mended)."""
    with transaction(runtime.engine) as session:
        workspaces = [ws for ws, settings in session.execute(select(Connection.workspace_id, Connection.settings)
                                                             .where(Connection.kind == SYSTEM))
                      if poll_interval(settings)]
    return sum(arm_now(runtime, workspace_id) for workspace_id in workspaces)


def arm_now(runtime, workspace_id: str) -> bool:
    """A first poll right away, if the workspace's connection polls and no run waits already."""
    with transaction(runtime.engine) as session:
        connection = _lock_connection(session, workspace_id)
        return bool(connection and poll_interval(connection.settings)) and arm(session, workspace_id, 0.0)


def run_poll_outbox(runtime, row: Outbox) -> dict:
    """The periodic job: poll (one worker at a time per workspace: a Redis lock), then arm the next run
    on the connection's interval (also after a vendor outage). A connection that stopped polling ends the chain."""
    from hub.sync.engine import connectors_for

    lock = runtime.redis().lock(f"hub:poll-lock:{row.workspace_id}:{SYSTEM}",
                                timeout=defaults.JOB_TIMEOUT_SECONDS, blocking=False)
    if not lock.acquire(blocking=False):
        return {"stored": 0, "error": None, "skipped": "another worker is polling"}
    try:
        stored, error = _poll(runtime, row.workspace_id, connectors_for(runtime, row.workspace_id).get(SYSTEM))
        with transaction(runtime.engine) as session:
            arm(session, row.workspace_id, exclude=row.id)
    finally:
        try:
            lock.release()
        except LockError:           # held past its timeout: another worker may be polling by now
            logger.warning("salesforce poll lock for %s expired before release", row.workspace_id)
    return {"stored": stored, "error": error}


def _poll(runtime, workspace_id: str, connector: CrmConnector | None) -> tuple[int, str | None]:
    if connector is None:
        return 0, None
    try:
        return poll_once(runtime, workspace_id, connector) + poll_deleted(runtime, workspace_id, connector), None
    except (RetriableError, FatalError) as exc:
        error = f"{type(exc).__name__}: {exc}"
        logger.warning("salesforce poll for %s failed, next run retries: %s", workspace_id, error)
        return 0, error
