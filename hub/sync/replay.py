"""Re-run events: `hub replay --failed` and `hub replay --event ID`."""
from __future__ import annotations

from sqlalchemy import select

from hub.db import transaction
from hub.models import Event, Outbox, utcnow
from hub.store import BULK_PROCESS_JOB, PROCESS_JOB


def _requeue(session, events: list[Event], job: str) -> None:
    by_workspace: dict[str, list[int]] = {}
    for event in events:
        event.status = "pending"
        event.attempts = 0
        event.last_error = None
        by_workspace.setdefault(event.workspace_id, []).append(event.id)
    now = utcnow()
    for workspace_id, ids in by_workspace.items():
        session.add(Outbox(workspace_id=workspace_id, job=job, payload={"event_ids": ids},
                           created_at=now, available_at=now, attempts=0))


def replay_failed(runtime) -> int:
    with transaction(runtime.engine) as session:
        events = session.scalars(select(Event).where(Event.status == "failed").order_by(Event.id)).all()
        _requeue(session, list(events), BULK_PROCESS_JOB)     # may be many: behind live changes
        return len(events)


def replay_event(runtime, event_id: int) -> bool:
    with transaction(runtime.engine) as session:
        event = session.get(Event, event_id)
        if event is None or event.status == "malformed":
            return False
        _requeue(session, [event], PROCESS_JOB)
        return True
