"""Salesforce polling: a periodic job that pulls changed Leads/Contacts through a stored cursor.

For orgs without Outbound Messages (DESIGN.md). The connector's `read_changes(cursor)` queries by
SystemModstamp with a lookback window and an Id tie-breaker; this module keeps its cursor in
`sync_cursor` (name "poll"), stores the records as events (dedupe keys hold the modification time,
so the lookback re-reads nothing twice) and re-arms itself as an Outbox row with job "sync_poll"
every SALESFORCE_POLL_INTERVAL_SECONDS.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select

from hub import defaults
from hub.connectors.base import CrmConnector
from hub.db import transaction
from hub.exceptions import FatalError, RetriableError
from hub.models import Outbox, SyncCursor, utcnow
from hub.sync.snapshots import store_records

logger = logging.getLogger(__name__)

JOB = "sync_poll"
CURSOR_NAME = "poll"


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


def arm(session, workspace_id: str, delay_seconds: float = defaults.SALESFORCE_POLL_INTERVAL_SECONDS) -> None:
    """Make sure one sync_poll outbox row waits for the workspace."""
    waiting = session.scalar(select(Outbox.id).where(
        Outbox.workspace_id == workspace_id, Outbox.job == JOB, Outbox.done_at.is_(None)).limit(1))
    if waiting is None:
        session.add(Outbox(workspace_id=workspace_id, job=JOB, payload={"system": "salesforce"},
                           available_at=utcnow() + timedelta(seconds=delay_seconds), attempts=0))


def run_poll_outbox(runtime, row: Outbox) -> dict:
    """The periodic job: poll, then arm the next run (also after a vendor outage)."""
    from hub.sync.engine import connectors_for

    stored, error = 0, None
    connector = connectors_for(runtime, row.workspace_id).get("salesforce")
    if connector is not None:
        try:
            stored = poll_once(runtime, row.workspace_id, connector)
        except (RetriableError, FatalError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            logger.warning("salesforce poll for %s failed, next run retries: %s", row.workspace_id, error)
    with transaction(runtime.engine) as session:
        if connector is not None:
            session.add(Outbox(workspace_id=row.workspace_id, job=JOB, payload={"system": "salesforce"},
                               available_at=utcnow() + timedelta(seconds=defaults.SALESFORCE_POLL_INTERVAL_SECONDS),
                               attempts=0))
    return {"stored": stored, "error": error}
