"""MQL handoff: pick the owner, record the assignment (with its SLA deadline), then in each connected
CRM set the owner and open a follow-up task, and tell the team.

Every step is idempotent: the assignment is keyed by the effect's idempotency key, and each CRM
write is remembered in `assignment.crm_refs` as soon as it succeeds ("hubspot_owner",
"hubspot_task", "salesforce_owner", "salesforce_task", "notice"), so a retried job only does what
is left. A contact not yet in a CRM (the sync push creates it) is a RetriableError: the effect
runs again shortly. Lifecycle stage and score fields reach the CRMs through the sync push
(hub.sync.push), which also records them in the echo ledger.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from hub.connectors.base import CrmRecord, TaskSpec
from hub.connectors.notice import Notice
from hub.db import transaction
from hub.exceptions import FatalError, RetriableError
from hub.logs import mask_email
from hub.models import Assignment, Contact, Identity, LeadScore, Rep, SegmentMembership, SyncLog, utcnow
from hub.rules.evaluation import load_activities
from hub.rules.notices import send_notice
from hub.rules.routing import Choice, choose_owner
from hub.rules.scoring import format_reasons
from hub.rules.store import compiled_rules
from hub.sync.owners import fill_owner_ids, remember_owner_write

logger = logging.getLogger(__name__)

NOT_IN_CRM_RETRY_SECONDS = 2.0
OWNER_FIELD = {"hubspot": "hubspot_owner_id", "salesforce": "OwnerId"}
REP_CRM_ID = {"hubspot": "hubspot_owner_id", "salesforce": "salesforce_user_id"}


@dataclass
class Delivery:
    """What the CRM step needs, read once from the database."""

    assignment_id: int
    workspace_id: str
    contact_id: str
    email: str | None
    name: str
    company: str | None
    score: float
    grade: str | None
    reasons: list
    owner_email: str | None
    crm_owner_ids: dict[str, str | None]
    due_at: datetime | None
    refs: dict
    reason: str


def assign(session, workspace_id: str, contact_id: str, key: str, now: datetime,
           exclude: frozenset[str] = frozenset(), previous: Assignment | None = None) -> Assignment:
    """The assignment for `key`, created (owner chosen, SLA armed) if it does not exist yet."""
    existing = session.scalar(select(Assignment).where(Assignment.workspace_id == workspace_id,
                                                       Assignment.idempotency_key == key))
    if existing is not None:
        return existing
    contact = session.get(Contact, contact_id)
    _, rules = compiled_rules(session, workspace_id)
    profile = rules.profile(contact, load_activities(session, contact_id, now), now)
    choice: Choice = choose_owner(session, contact, profile, rules.rules.routing, now, exclude)
    assignment = Assignment(
        workspace_id=workspace_id, contact_id=contact_id, rep_id=choice.rep.id if choice.rep else None,
        owner_email=choice.owner_email, reason=choice.reason,
        status="open" if choice.owner_email else "unassigned", idempotency_key=key, assigned_at=now,
        due_at=now + timedelta(hours=rules.rules.sla.hours) if choice.owner_email else None,
        crm_refs={}, previous_id=previous.id if previous else None)
    session.add(assignment)
    if choice.owner_email:
        contact.owner = choice.owner_email
    session.add(SyncLog(workspace_id=workspace_id, target="rules", operation="assign", object_ids=[contact_id],
                        status="decision", error=f"{choice.reason} -> {mask_email(choice.owner_email) or 'nobody'}"
                        + (f" ({'; '.join(choice.considered)})" if choice.considered else "")))
    session.flush()
    logger.info("lead %s assigned to %s (%s)", contact_id, mask_email(choice.owner_email) or "nobody", choice.reason)
    return assignment


def _delivery(session, assignment: Assignment) -> Delivery:
    contact = session.get(Contact, assignment.contact_id)
    rep = session.get(Rep, assignment.rep_id) if assignment.rep_id else None
    name = " ".join(part for part in (contact.first_name, contact.last_name) if part) or (contact.email or contact.id)
    return Delivery(assignment.id, assignment.workspace_id, contact.id, contact.email, name, contact.company,
                    contact.score, contact.grade, list(contact.score_reasons or []), assignment.owner_email,
                    {kind: getattr(rep, field) if rep else None for kind, field in REP_CRM_ID.items()},
                    assignment.due_at, dict(assignment.crm_refs or {}), assignment.reason)


def _remember(runtime, assignment_id: int, ref: str, value) -> None:
    """Record a finished step at once, so a retry never repeats it."""
    with transaction(runtime.engine) as session:
        row = session.get(Assignment, assignment_id)
        row.crm_refs = {**(row.crm_refs or {}), ref: value}


def _record_id(runtime, delivery: Delivery, kind: str, connector) -> tuple[str, str]:
    """(object type, id) of the contact in the CRM: the identity link, else a lookup by email."""
    with transaction(runtime.engine) as session:
        identity = session.execute(select(Identity.external_id, Identity.object_type).where(
            Identity.workspace_id == delivery.workspace_id, Identity.contact_id == delivery.contact_id,
            Identity.system == kind).order_by(Identity.id.desc()).limit(1)).first()
    if identity is not None:
        return identity[1] or ("contact" if kind == "hubspot" else "Lead"), identity[0]
    found = connector.find_by_email([delivery.email]).get((delivery.email or "").lower()) if delivery.email else None
    if found is None:
        raise RetriableError(f"contact not in {kind} yet", retry_after=NOT_IN_CRM_RETRY_SECONDS)
    return found.object_type, found.id


def _task(delivery: Delivery, kind: str, record_id: str) -> TaskSpec:
    reasons = format_reasons(delivery.reasons) or "no reasons recorded"
    return TaskSpec(record_id=record_id, subject=f"Follow up with MQL {delivery.name}"[:255],
                    body=f"Score {delivery.score:g}, grade {delivery.grade}. Why: {reasons}. "
                         f"Assigned by {delivery.reason}; please act before {delivery.due_at:%Y-%m-%d %H:%M} UTC."
                    if delivery.due_at else f"Score {delivery.score:g}, grade {delivery.grade}. Why: {reasons}.",
                    due_at=delivery.due_at, owner_id=delivery.crm_owner_ids.get(kind))


def _write_owner(connector, kind: str, delivery: Delivery, object_type: str, record_id: str) -> None:
    owner_id = delivery.crm_owner_ids.get(kind)
    properties = {OWNER_FIELD[kind]: owner_id}
    if kind == "hubspot":
        properties["email"] = delivery.email
    [result] = connector.batch_upsert([CrmRecord(object_type, None if kind == "hubspot" else record_id, properties)])
    if not result.ok:
        raise FatalError(f"{kind} refused the owner: {result.error_message}", code=result.error_code)


def deliver(runtime, assignment_id: int, connectors: dict | None = None) -> dict:
    """Owner and task in each connected CRM, then the notice; skips the steps already done."""
    from hub.sync.engine import connectors_for

    with transaction(runtime.engine) as session:
        delivery = _delivery(session, session.get(Assignment, assignment_id))
    connectors = connectors if connectors is not None else connectors_for(runtime, delivery.workspace_id)
    fill_owner_ids(runtime, delivery.workspace_id, delivery.owner_email, delivery.crm_owner_ids, connectors)
    for kind, connector in sorted(connectors.items()):
        if f"{kind}_task" in delivery.refs and (f"{kind}_owner" in delivery.refs or not delivery.crm_owner_ids.get(kind)):
            continue
        object_type, record_id = _record_id(runtime, delivery, kind, connector)
        if delivery.crm_owner_ids.get(kind) and f"{kind}_owner" not in delivery.refs:
            _write_owner(connector, kind, delivery, object_type, record_id)
            remember_owner_write(runtime, delivery.workspace_id, kind, delivery.contact_id, record_id,
                                 delivery.crm_owner_ids[kind])
            _remember(runtime, assignment_id, f"{kind}_owner", delivery.crm_owner_ids[kind])
        if f"{kind}_task" not in delivery.refs:
            task_id = connector.create_task(_task(delivery, kind, record_id))
            _remember(runtime, assignment_id, f"{kind}_task", task_id)
            delivery.refs[f"{kind}_task"] = task_id
    if "notice" not in delivery.refs:
        channel = send_notice(runtime, delivery.workspace_id, Notice(
            subject=f"New MQL for {delivery.owner_email or 'nobody (no rep available)'}",
            text=f"{delivery.name}{f' at {delivery.company}' if delivery.company else ''}: score {delivery.score:g}, "
                 f"grade {delivery.grade}. {format_reasons(delivery.reasons)}",
            fields={"owner": delivery.owner_email or "-", "assigned by": delivery.reason},
            idempotency_key=f"handoff:{assignment_id}"))
        _remember(runtime, assignment_id, "notice", channel)
    with transaction(runtime.engine) as session:
        return dict(session.get(Assignment, assignment_id).crm_refs or {})


def run_handoff(runtime, effect, now: datetime | None = None) -> dict:
    """The `handoff` lead effect."""
    now = now or utcnow()
    with transaction(runtime.engine) as session:
        assignment = assign(session, effect.workspace_id, effect.contact_id, effect.idempotency_key, now)
        assignment_id = assignment.id
    refs = deliver(runtime, assignment_id)
    return {"assignment_id": assignment_id, **refs}


def recycle(session, workspace_id: str, contact_id: str, reason: str, now: datetime | None = None) -> bool:
    """Sales rejected the lead: back to nurture with a reason; behaviour before now no longer counts.

    Closes the open assignment and the MQL membership; the next evaluation scores only new activity,
    so the lead must earn MQL again. Returns False when the contact is unknown.
    """
    now = now or utcnow()
    contact = session.scalar(select(Contact).where(Contact.id == contact_id, Contact.workspace_id == workspace_id))
    if contact is None:
        return False
    _, rules = compiled_rules(session, workspace_id)
    lead = session.get(LeadScore, contact_id)
    if lead is None:
        lead = LeadScore(contact_id=contact_id, workspace_id=workspace_id, decaying=0.0, static=0.0, fit_points=0.0,
                         contributions={}, decayed_at=now)
        session.add(lead)
    lead.recycled_at = now
    lead.recycle_reason = reason
    for assignment in session.scalars(select(Assignment).where(Assignment.contact_id == contact_id,
                                                               Assignment.status.in_(("open", "unassigned")))):
        assignment.status = "recycled"
        assignment.closed_at = now
        assignment.note = reason
    membership = session.scalar(select(SegmentMembership).where(
        SegmentMembership.contact_id == contact_id, SegmentMembership.segment == rules.rules.mql.segment,
        SegmentMembership.left_at.is_(None)))
    if membership is not None:
        membership.left_at = now
    contact.mql = False
    session.add(SyncLog(workspace_id=workspace_id, target="rules", operation="recycle", object_ids=[contact_id],
                        status="decision", error=reason[:500]))
    logger.info("lead %s recycled to nurture: %s", contact_id, reason)
    return True
