"""Scheduling lead-rule evaluation after a contact or its activities changed.

`schedule_evaluation` is called by processing inside its transaction. It adds one Outbox row
with job "evaluate_rules" for the contact, unless one is already waiting (not yet handed to a
worker; a unique index on Outbox.waiting_key keeps it to one, whichever transaction comes first): a
burst of events about one person becomes one evaluation. While the rules queue is backed up the
relay leaves these rows in the outbox (defaults.QUEUE_HIGH_WATER), so a person changed many times
meanwhile is evaluated once. The row commits with the change that caused it, so an evaluation is
never lost; evaluating twice is harmless (it is a pure function of the contact's data, and its
effects carry idempotency keys).
"""
from __future__ import annotations

from sqlalchemy import text

from hub.db import insert_ignoring_duplicates
from hub.models import OUTBOX_WAITING, Outbox, utcnow

JOB = "evaluate_rules"
_SCHEDULED = "hub.rules.scheduled"     # session.info key: contacts already scheduled in this transaction


def schedule_evaluation(session, workspace_id: str, contact_id: str) -> None:
    """Called by processing, in its transaction, after a contact or its activities changed."""
    scheduled: set = session.info.setdefault(_SCHEDULED, set())
    key = (workspace_id, contact_id)
    if key in scheduled:
        return
    scheduled.add(key)
    # One waiting row per contact (ux_outbox_waiting_key): a row the relay has not handed out yet
    # covers this change too, whoever added it, so this adds nothing then.
    now = utcnow()
    insert_ignoring_duplicates(session, Outbox, ["workspace_id", "waiting_key"], text(OUTBOX_WAITING),
                               workspace_id=workspace_id, job=JOB, payload={"contact_id": contact_id},
                               waiting_key=f"{JOB}:{contact_id}", created_at=now, available_at=now, attempts=0)
