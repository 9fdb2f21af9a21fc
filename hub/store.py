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


def ingest(engine: Engine, routed: list[tuple[str, IncomingEvent]], status: str = "pending") -> IngestResult:
    """Store every (workspace_id, event); duplicates change nothing. Commits before returning.

    New pending events get one outbox row per workspace, so the relay can hand them to a worker.
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
    with transaction(engine) as session:
        stmt = _insert_ignoring_duplicates(engine).returning(Event.id, Event.workspace_id)
        # One INSERT .. ON CONFLICT DO NOTHING RETURNING for the batch (SQLAlchemy "insertmanyvalues").
        inserted = session.execute(stmt, rows).all()
        result.duplicates += len(rows) - len(inserted)
        by_workspace: dict[str, list[int]] = {}
        for event_id, workspace_id in inserted:
            by_workspace.setdefault(workspace_id, []).append(event_id)
            result.accepted.append(event_id)
        if status == "pending" and by_workspace:
            session.execute(insert(Outbox), [
                {"workspace_id": ws, "job": "process_events", "payload": {"event_ids": sorted(ids)},
                 "created_at": now, "available_at": now, "attempts": 0}
                for ws, ids in by_workspace.items()
            ])
    return result

