"""The durable write of the request path: events, their dedupe keys and an outbox row, in one transaction."""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from hub.db import transaction
from hub.models import Event, Outbox, utcnow
from webhooks.common import IncomingEvent


@dataclass
class IngestResult:
    accepted: list[int] = field(default_factory=list)   # ids of newly stored events
    duplicates: int = 0


def _insert_ignoring_duplicates(engine: Engine):
    dialect_insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
    return dialect_insert(Event).on_conflict_do_nothing(index_elements=["workspace_id", "dedupe_key"])


def _lock_order(row: dict) -> tuple[str, str]:
    return row["workspace_id"], row["dedupe_key"]


def _processing_order(row: dict) -> tuple:
    occurred = row["occurred_at"]
    return (occurred is None, occurred.timestamp() if occurred else 0.0, row["position"])


def ingest(engine: Engine, routed: list[tuple[str, IncomingEvent]], status: str = "pending") -> IngestResult:
    """Store every (workspace_id, event); duplicates change nothing. Commits before returning.

    New pending events get one outbox row per workspace, so the relay can hand them to a worker.
    Rows are inserted in unique-key order, so concurrent deliveries of overlapping batches take
    their index locks in the same order (no deadlock); the outbox lists them in the order they
    happened, which is the order workers apply them.
    """
    result = IngestResult()
    if not routed:
        return result
    now = utcnow()
    rows, seen = [], set()
    for workspace_id, event in routed:
        key = (workspace_id, event.dedupe_key)
        if key in seen:          # the same event twice in one delivery
            result.duplicates += 1
            continue
        seen.add(key)
        rows.append({
            "workspace_id": workspace_id, "source": event.source, "kind": event.kind,
            "dedupe_key": event.dedupe_key, "payload": event.payload, "received_at": now,
            "occurred_at": event.occurred_at, "status": status, "attempts": 0,
        })
    rows.sort(key=_lock_order)
    with transaction(engine) as session:
        stmt = _insert_ignoring_duplicates(engine).returning(Event.id, Event.workspace_id, Event.dedupe_key)
        # One INSERT .. ON CONFLICT DO NOTHING RETURNING for the batch (SQLAlchemy "insertmanyvalues").
        inserted = session.execute(stmt, rows).all()
        result.duplicates += len(rows) - len(inserted)
        result.accepted.extend(event_id for event_id, _, _ in inserted)
        if status == "pending" and inserted:
            session.execute(insert(Outbox), _outbox_rows(routed, rows, inserted, now))
    return result


def _outbox_rows(routed, rows: list[dict], inserted, now) -> list[dict]:
    """One outbox row per workspace listing its new events in the order they happened."""
    position = {(ws, event.dedupe_key): index for index, (ws, event) in enumerate(routed)}
    by_key = {_lock_order(row): row for row in rows}
    by_workspace: dict[str, list[tuple]] = {}
    for event_id, workspace_id, dedupe_key in inserted:
        row = by_key[(workspace_id, dedupe_key)]
        order = _processing_order({**row, "position": position[(workspace_id, dedupe_key)]})
        by_workspace.setdefault(workspace_id, []).append((order, event_id))
    return [
        {"workspace_id": ws, "job": "process_events",
         "payload": {"event_ids": [event_id for _, event_id in sorted(entries)]},
         "created_at": now, "available_at": now, "attempts": 0}
        for ws, entries in by_workspace.items()
    ]
