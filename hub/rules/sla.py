"""SLA timers: an MQL's owner must act within the rule set's hours, else the lead moves on.

An open assignment past its `due_at` whose owner has not acted (no sales activity recorded for the
contact since it was assigned, lifecycle not moved past MQL, owner unchanged in the CRM) is
reassigned to the next rep (the previous owners excluded), with a new CRM owner and task, and the
reassignment is logged (log line and a sync_log "decision" row). After `max_reassignments`, or
when the policy says "escalate", it is escalated instead: a notice names the lead and the deadline.
The clock is a parameter, so tests move time instead of waiting.
"""
from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select

from hub import defaults
from hub.connectors.notice import Notice
from hub.db import transaction
from hub.logs import mask_email
from hub.models import Activity, Assignment, Contact, SyncLog, utcnow
from hub.rules.handoff import assign, deliver
from hub.rules.mql import HUBSPOT_LIFECYCLE_ORDER, MQL_STAGE
from hub.rules.notices import send_notice
from hub.rules.store import compiled_rules

logger = logging.getLogger(__name__)

# Activity kinds that show the owner worked the lead (recorded by processing from CRM changes).
SALES_ACTIVITY_KINDS = ("sales_call", "sales_email", "meeting", "note", "task_completed", "sales_activity")


def owner_acted(session, assignment: Assignment, contact: Contact) -> str | None:
    """Why the owner counts as having acted, or None."""
    acted = session.scalar(select(Activity.kind).where(
        Activity.contact_id == assignment.contact_id, Activity.kind.in_(SALES_ACTIVITY_KINDS),
        Activity.occurred_at >= assignment.assigned_at).limit(1))
    if acted:
        return f"activity {acted}"
    stage = (contact.lifecycle_stage or "").lower()
    if stage in HUBSPOT_LIFECYCLE_ORDER and HUBSPOT_LIFECYCLE_ORDER.index(stage) > HUBSPOT_LIFECYCLE_ORDER.index(MQL_STAGE):
        return f"lifecycle {stage}"
    if contact.owner and assignment.owner_email and contact.owner.lower() != assignment.owner_email.lower():
        return "owner changed in the CRM"
    return None


def _previous_owners(session, assignment: Assignment) -> frozenset[str]:
    owners, current = set(), assignment
    while current is not None:
        if current.owner_email:
            owners.add(current.owner_email.lower())
        current = session.get(Assignment, current.previous_id) if current.previous_id else None
    return frozenset(owners)


def _chain_length(session, assignment: Assignment) -> int:
    length, current = 0, assignment
    while current.previous_id:
        length += 1
        current = session.get(Assignment, current.previous_id)
    return length


def check_overdue(runtime, workspace_id: str, now: datetime | None = None) -> dict:
    """One SLA pass over the workspace; returns counts by outcome."""
    now = now or utcnow()
    counts = {"acted": 0, "reassigned": 0, "escalated": 0}
    with transaction(runtime.engine) as session:
        due = list(session.scalars(select(Assignment.id).where(
            Assignment.workspace_id == workspace_id, Assignment.status == "open", Assignment.due_at <= now)
            .order_by(Assignment.due_at).limit(defaults.RULES_SLA_BATCH)))
    for assignment_id in due:
        outcome, new_id = _handle(runtime, assignment_id, now)
        counts[outcome] = counts.get(outcome, 0) + 1
        if new_id is not None:
            deliver(runtime, new_id)
    return counts


def _handle(runtime, assignment_id: int, now: datetime) -> tuple[str, int | None]:
    with transaction(runtime.engine) as session:
        assignment = session.get(Assignment, assignment_id)
        if assignment.status != "open":
            return "skipped", None
        contact = session.get(Contact, assignment.contact_id)
        why = owner_acted(session, assignment, contact)
        if why:
            assignment.status, assignment.closed_at, assignment.note = "acted", now, why
            return "acted", None
        _, rules = compiled_rules(session, assignment.workspace_id)
        policy = rules.rules.sla
        new = None
        if policy.action == "reassign" and _chain_length(session, assignment) < policy.max_reassignments:
            new = assign(session, assignment.workspace_id, assignment.contact_id, f"reassign:{assignment.id}", now,
                         exclude=_previous_owners(session, assignment), previous=assignment)
            if new.owner_email is None:        # nobody else can take it: escalate instead
                session.delete(new)
                new = None
        if new is None:
            escalation = _escalate(session, assignment, contact, policy)
        else:
            assignment.status, assignment.closed_at = "reassigned", now
            assignment.note = f"SLA of {policy.hours:g} h missed; reassigned to {new.owner_email}"
            session.add(SyncLog(workspace_id=assignment.workspace_id, target="rules", operation="reassign",
                                object_ids=[assignment.contact_id], status="decision",
                                error=f"{mask_email(assignment.owner_email)} -> {mask_email(new.owner_email)}"))
            logger.warning("lead %s reassigned: %s missed the %s h SLA, new owner %s (%s)", assignment.contact_id,
                           mask_email(assignment.owner_email), policy.hours, mask_email(new.owner_email), new.reason)
            new_id = new.id
        workspace_id = assignment.workspace_id
    if new is None:
        send_notice(runtime, workspace_id, escalation)
        return "escalated", None
    return "reassigned", new_id


def _escalate(session, assignment: Assignment, contact: Contact, policy) -> Notice:
    assignment.status, assignment.note = "escalated", f"SLA of {policy.hours:g} h missed"
    session.add(SyncLog(workspace_id=assignment.workspace_id, target="rules", operation="escalate",
                        object_ids=[assignment.contact_id], status="decision",
                        error=f"owner {mask_email(assignment.owner_email)} missed the SLA"))
    logger.warning("lead %s escalated: owner %s missed the %s h SLA", assignment.contact_id,
                   mask_email(assignment.owner_email), policy.hours)
    return Notice(subject="MQL SLA missed", text=(
        f"Lead {contact.first_name or ''} {contact.last_name or ''} ({contact.company or '-'}) was not worked by "
        f"{assignment.owner_email} within {policy.hours:g} h."
        + (f" Escalated to {policy.escalate_to}." if policy.escalate_to else "")),
        idempotency_key=f"escalate:{assignment.id}")
