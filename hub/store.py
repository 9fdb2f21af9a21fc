"""The durable write of the request path: events, their dedupe keys and an outbox row, in one transaction.

Two ways to write the same rows, both committed before `ingest` returns:
- PostgreSQL: one statement (events from a JSON recordset, then the outbox rows built from what was
  inserted) in one transaction, so a delivery costs one round trip and little Python;
- other databases (the embedded SQLite default): a Core INSERT .. ON CONFLICT DO NOTHING RETURNING,
  then the outbox rows.
Rows are inserted in unique-key order, so concurrent deliveries of overlapping batches take their
index locks in the same order (no deadlock); an outbox row lists its events in the order they
happened, which is the order workers apply them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from sqlalchemy import insert, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

from hub.models import Event, Outbox, utcnow
from webhooks.common import IncomingEvent

# Core tables: the request path needs no identity map or unit of work (the ORM bulk path costs
# several times the CPU; see bench/ingest).
EVENTS = Event.__table__
OUTBOX = Outbox.__table__
PROCESS_JOB = "process_events"

_PG_INGEST = text("""
WITH incoming AS (
    SELECT * FROM json_to_recordset(CAST(:rows AS json)) AS r(
        workspace_id varchar, source varchar, kind varchar, dedupe_key varchar, payload json,
        received_at timestamptz, occurred_at timestamptz, status varchar, attempts integer, position integer)
), inserted AS (
    INSERT INTO event (workspace_id, source, kind, dedupe_key, payload, received_at, occurred_at, status, attempts)
    SELECT workspace_id, source, kind, dedupe_key, payload, received_at, occurred_at, status, attempts
    FROM incoming ORDER BY workspace_id, dedupe_key
    ON CONFLICT (workspace_id, dedupe_key) DO NOTHING
    RETURNING id, workspace_id, dedupe_key
), queued AS (
    INSERT INTO outbox (workspace_id, job, payload, created_at, available_at, attempts)
    SELECT inserted.workspace_id, :job,
           json_build_object('event_ids', json_agg(inserted.id
               ORDER BY incoming.occurred_at IS NULL, incoming.occurred_at, incoming.position)),
           CAST(:now AS timestamptz), CAST(:now AS timestamptz), 0
    FROM inserted JOIN incoming USING (workspace_id, dedupe_key)
    WHERE CAST(:status AS varchar) = 'pending'
    GROUP BY inserted.workspace_id
)
SELECT id FROM inserted
""")


@dataclass
class IngestResult:
    accepted: list[int] = field(default_factory=list)   # ids of newly stored events
    duplicates: int = 0


def _lock_order(row: dict) -> tuple[str, str]:
    return row["workspace_id"], row["dedupe_key"]


def _processing_order(row: dict) -> tuple:
    occurred = row["occurred_at"]
    return (occurred is None, occurred.timestamp() if occurred else 0.0, row["position"])


def ingest(engine: Engine, routed: list[tuple[str, IncomingEvent]], status: str = "pending") -> IngestResult:
    """Store every (workspace_id, event); duplicates change nothing. Commits before returning.

    New pending events get one outbox row per workspace, so the relay can hand them to a worker.
    """
    result = IngestResult()
    if not routed:
        return result
    now = utcnow()
    rows, seen = [], set()
    for position, (workspace_id, event) in enumerate(routed):
        key = (workspace_id, event.dedupe_key)
        if key in seen:          # the same event twice in one delivery
            result.duplicates += 1
            continue
        seen.add(key)
        rows.append({
            "workspace_id": workspace_id, "source": event.source, "kind": event.kind,
            "dedupe_key": event.dedupe_key, "payload": event.payload, "received_at": now,
            "occurred_at": event.occurred_at, "status": status, "attempts": 0, "position": position,
        })
    with engine.begin() as conn:           # commits on success, rolls back on any error
        write = _write_postgres if engine.dialect.name == "postgresql" else _write_core
        result.accepted = write(conn, rows, status, now)
    result.duplicates += len(rows) - len(result.accepted)
    return result


def _write_postgres(conn: Connection, rows: list[dict], status: str, now) -> list[int]:
    for row in rows:
        row["received_at"] = now.isoformat()
        row["occurred_at"] = row["occurred_at"].isoformat() if row["occurred_at"] else None
    params = {"rows": json.dumps(rows, separators=(",", ":")), "now": now.isoformat(), "status": status,
              "job": PROCESS_JOB}
    return list(conn.execute(_PG_INGEST, params).scalars())


def _write_core(conn: Connection, rows: list[dict], status: str, now) -> list[int]:
    rows.sort(key=_lock_order)
    stmt = (sqlite_insert(EVENTS).on_conflict_do_nothing(index_elements=["workspace_id", "dedupe_key"])
            .returning(EVENTS.c.id, EVENTS.c.workspace_id, EVENTS.c.dedupe_key))
    # One INSERT .. ON CONFLICT DO NOTHING RETURNING for the batch (SQLAlchemy "insertmanyvalues").
    inserted = conn.execute(stmt, [{k: v for k, v in row.items() if k != "position"} for row in rows]).all()
    if status == "pending" and inserted:
        conn.execute(insert(OUTBOX), _outbox_rows(rows, inserted, now))
    return [event_id for event_id, _, _ in inserted]


def _outbox_rows(rows: list[dict], inserted, now) -> list[dict]:
    """One outbox row per workspace listing its new events in the order they happened."""
    by_key = {_lock_order(row): row for row in rows}
    by_workspace: dict[str, list[tuple]] = {}
    for event_id, workspace_id, dedupe_key in inserted:
        order = _processing_order(by_key[(workspace_id, dedupe_key)])
        by_workspace.setdefault(workspace_id, []).append((order, event_id))
    return [
        {"workspace_id": ws, "job": PROCESS_JOB,
         "payload": {"event_ids": [event_id for _, event_id in sorted(entries)]},
         "created_at": now, "available_at": now, "attempts": 0}
        for ws, entries in by_workspace.items()
    ]
