"""Scheduling lead-rule evaluation after a contact or its activities changed.

`schedule_evaluation` is called by processing inside its transaction. It adds one Outbox row
with job "evaluate_rules" for the contact, unless one is already waiting (not yet handed to a
worker): a burst of events about one person becomes one evaluation. The row commits with the
change that caused it, so an evaluation is never lost; evaluating twice is harmless (it is a
pure function of the contact's data, and its effects carry idempotency keys).
"""
from __future__ import annotations

from sqlalchemy import select

from hub.models import Outbox, utcnow

JOB = "evaluate_rules"
_SCHEDULED = "hub.rules.scheduled"     # session.info key: contacts already scheduled in this transaction


def schedule_evaluation(session, workspace_id: str, contact_id: str) -> None:
    """Called by processing, in its transaction, after a contact or its activities changed."""
    scheduled: set = session.info.setdefault(_SCHEDULED, set())
    key = (workspace_id, contact_id)
    if key in scheduled:
        return
    scheduled.add(key)
    waiting = session.scalar(
        select(Outbox.id).where(
            Outbox.workspace_id == workspace_id, Outbox.job == JOB, Outbox.done_at.is_(None),
            Outbox.enqueued_at.is_(None), Outbox.payload["contact_id"].as_string() == contact_id)
        .limit(1))
    if waiting is not None:
        return
    now = utcnow()
    session.add(Outbox(workspace_id=workspace_id, job=JOB, payload={"contact_id": contact_id},
                       created_at=now, available_at=now, attempts=0))
