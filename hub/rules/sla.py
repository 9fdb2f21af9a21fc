"""SLA timers: an MQL's owner must act within the rule set's hours, else the lead moves on.

An open assignment past its `due_at` whose owner has not acted is reassigned to the next rep (the
previous owners excluded), with a new CRM owner and task, and the reassignment is logged (log line
and a sync_log "decision" row). After `max_reassignments`, or when the policy says "escalate", it
is escalated instead: a notice names the lead and the deadline. The clock is a parameter, so tests
move time instead of waiting.

"Acted" means: a sales activity recorded for the contact since it was assigned, lifecycle moved
past MQL, the owner changed in the CRM, or the follow-up task completed in a connected CRM. The
tasks (`assignment.crm_refs` "hubspot_task" / "salesforce_task") are read back once per pass for
all the assignments due: HubSpot tasks batch read (≤100 ids a call, hs_task_status COMPLETED =
done), Salesforce one SOQL per ≤200 ids (IsClosed = done). A CRM that cannot be read leaves its
assignments as they are until the next pass: nobody is reassigned on an unknown.

When a lead is reassigned, the previous owner's open task is set to Deferred (HubSpot
hs_task_status DEFERRED, Salesforce Status "Deferred", both standard values) with a line in its
body saying why. Each settled task is recorded in the old assignment's crm_refs
("hubspot_task_deferred", "salesforce_task_deferred": deferred | closed | missing | refused <code>),
so a retry skips it; a deferral that failed on a retriable error (or an expired token) is tried
again by the passes of the next RULES_SLA_DEFER_RETRY_HOURS.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select

from hub import defaults
from hub.connectors.base import TaskState
from hub.connectors.notice import Notice
from hub.db import transaction
from hub.exceptions import FatalError, RetriableError, TokenExpiredError
from hub.logs import mask_email
from hub.models import Activity, Assignment, Contact, SyncLog, utcnow
from hub.rules.handoff import assign, deliver
from hub.rules.mql import HUBSPOT_LIFECYCLE_ORDER, MQL_STAGE
from hub.rules.notices import send_notice
from hub.rules.store import compiled_rules

logger = logging.getLogger(__name__)

# Activity kinds that show the owner worked the lead (recorded by processing from CRM changes).
SALES_ACTIVITY_KINDS = ("sales_call", "sales_email", "meeting", "note", "task_completed", "sales_activity")
TASK_KINDS = ("hubspot", "salesforce")          # CRMs whose follow-up task id is in crm_refs["<kind>_task"]
DEFERRED_SUFFIX = "_task_deferred"              # crm_refs["<kind>_task_deferred"]: how the old task was settled
UNREAD = "unread"                               # outcome of an assignment whose CRM could not be read
RETRY_LATER_CODES = ("UNABLE_TO_LOCK_ROW", "NO_RESULT")   # a per-task refusal that may clear by itself


@dataclass
class TaskCheck:
    """What the CRMs said about the follow-up tasks of one SLA pass."""

    states: dict[str, dict[str, TaskState]] = field(default_factory=dict)   # kind -> task id -> state
    unreadable: dict[str, str] = field(default_factory=dict)                # kind -> why it could not be read

    def completed(self, refs: dict) -> str | None:
        """Why the owner counts as having acted in a CRM (a completed task), or None."""
        for kind, task_id in _task_ids(refs):
            state = self.states.get(kind, {}).get(task_id)
            if state is not None and state.done:
                return f"{kind} task {task_id} {state.status or 'closed'}"
        return None

    def unknown(self, refs: dict) -> list[str]:
        """The CRMs holding one of these tasks that could not be read this pass."""
        return [kind for kind, _ in _task_ids(refs) if kind in self.unreadable]


def _task_ids(refs: dict) -> list[tuple[str, str]]:
    return [(kind, str(refs[f"{kind}_task"])) for kind in TASK_KINDS if refs.get(f"{kind}_task")]


def owner_acted(session, assignment: Assignment, contact: Contact) -> str | None:
    """Why the owner counts as having acted in the hub's own records, or None (the CRM tasks: TaskCheck)."""
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


def read_task_states(connectors: dict, refs: list[dict]) -> TaskCheck:
    """Every task named in `refs`, batched per CRM; a CRM that fails is listed as unreadable."""
    check = TaskCheck()
    for kind, connector in sorted(connectors.items()):
        ids = sorted({task_id for one in refs for task_kind, task_id in _task_ids(one) if task_kind == kind})
        if not ids:
            continue
        try:
            check.states[kind] = connector.read_tasks(ids)
        except (RetriableError, FatalError) as exc:
            check.unreadable[kind] = f"{type(exc).__name__}: {exc}"
            logger.warning("SLA pass: %s tasks could not be read (%s); their leads wait for the next pass",
                           kind, check.unreadable[kind])
    return check


def _task_connectors(runtime, workspace_id: str, refs: list[dict]) -> tuple[dict, TaskCheck]:
    """The workspace's CRM connectors and their answer for the tasks in `refs` (no CRM call without tasks)."""
    from hub.sync.engine import connectors_for

    if not any(_task_ids(one) for one in refs):
        return {}, TaskCheck()
    try:
        connectors = connectors_for(runtime, workspace_id)
    except (RetriableError, FatalError) as exc:      # e.g. stored credentials that no longer load
        logger.warning("SLA pass: CRM connectors unavailable (%s: %s); leads with CRM tasks wait",
                       type(exc).__name__, exc)
        return {}, TaskCheck(unreadable={kind: str(exc) for kind in TASK_KINDS})
    return connectors, read_task_states(connectors, refs)


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
    """One SLA pass over the workspace; returns counts by outcome ("unread": a CRM could not be read)."""
    now = now or utcnow()
    counts = {"acted": 0, "reassigned": 0, "escalated": 0}
    with transaction(runtime.engine) as session:
        due = [(row.id, dict(row.crm_refs or {})) for row in session.scalars(select(Assignment).where(
            Assignment.workspace_id == workspace_id, Assignment.status == "open", Assignment.due_at <= now)
            .order_by(Assignment.due_at).limit(defaults.RULES_SLA_BATCH))]
        undeferred = _undeferred(session, workspace_id, now)
    connectors, check = _task_connectors(runtime, workspace_id, [refs for _, refs in due + undeferred])
    reassigned = [assignment_id for assignment_id, _ in undeferred]
    try:
        for assignment_id, _ in due:
            outcome, new_id = _handle(runtime, assignment_id, now, check)
            counts[outcome] = counts.get(outcome, 0) + 1
            if new_id is not None:
                reassigned.append(assignment_id)
                deliver(runtime, new_id, connectors or None)
    finally:
        defer_previous_tasks(runtime, connectors, reassigned, check)
    return counts


def _handle(runtime, assignment_id: int, now: datetime, check: TaskCheck) -> tuple[str, int | None]:
    with transaction(runtime.engine) as session:
        assignment = session.get(Assignment, assignment_id)
        if assignment.status != "open":
            return "skipped", None
        contact = session.get(Contact, assignment.contact_id)
        refs = dict(assignment.crm_refs or {})
        why = owner_acted(session, assignment, contact) or check.completed(refs)
        if why:
            assignment.status, assignment.closed_at, assignment.note = "acted", now, why
            logger.info("lead %s kept by %s: acted (%s)", assignment.contact_id, mask_email(assignment.owner_email),
                        why)
            return "acted", None
        unknown = check.unknown(refs)
        if unknown:
            logger.warning("lead %s: SLA not judged this pass, %s could not be read", assignment.contact_id,
                           ", ".join(unknown))
            return UNREAD, None
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


# --- the previous owner's task -------------------------------------------------------------------

def _undeferred(session, workspace_id: str, now: datetime) -> list[tuple[int, dict]]:
    """Recently reassigned assignments with a CRM task not yet settled (a deferral that failed before)."""
    since = now - timedelta(hours=defaults.RULES_SLA_DEFER_RETRY_HOURS)
    rows = session.scalars(select(Assignment).where(
        Assignment.workspace_id == workspace_id, Assignment.status == "reassigned", Assignment.closed_at >= since)
        .order_by(Assignment.closed_at).limit(defaults.RULES_SLA_BATCH))
    return [(row.id, dict(row.crm_refs or {})) for row in rows
            if any(f"{kind}{DEFERRED_SUFFIX}" not in row.crm_refs for kind, _ in _task_ids(row.crm_refs or {}))]


@dataclass
class _OldTask:
    assignment_id: int
    contact_id: str
    task_id: str
    note: str


def defer_previous_tasks(runtime, connectors: dict, assignment_ids: list[int], check: TaskCheck) -> None:
    """Set the reassigned leads' old tasks to Deferred, one batch per CRM; record each settled task."""
    if not assignment_ids or not connectors:
        return
    with transaction(runtime.engine) as session:
        rows = list(session.scalars(select(Assignment).where(Assignment.id.in_(assignment_ids))))
        reassigned = [(row.id, row.contact_id, dict(row.crm_refs or {}), _deferral_note(row)) for row in rows]
    settled: dict[int, dict] = {}
    for kind, connector in sorted(connectors.items()):
        if kind in check.unreadable:
            continue
        old = [_OldTask(assignment_id, contact_id, str(refs[f"{kind}_task"]), note)
               for assignment_id, contact_id, refs, note in reassigned
               if refs.get(f"{kind}_task") and f"{kind}{DEFERRED_SUFFIX}" not in refs]
        for task, outcome in _defer_in(kind, connector, old, check.states.get(kind, {})):
            settled.setdefault(task.assignment_id, {})[f"{kind}{DEFERRED_SUFFIX}"] = outcome
    if settled:
        with transaction(runtime.engine) as session:
            for row in session.scalars(select(Assignment).where(Assignment.id.in_(list(settled)))):
                row.crm_refs = {**(row.crm_refs or {}), **settled[row.id]}


def _defer_in(kind: str, connector, old: list[_OldTask], states: dict[str, TaskState]) -> list[tuple[_OldTask, str]]:
    """(task, how it was settled) for the tasks of one CRM; a write that may work later is left for a later pass."""
    settled, bodies, by_id = [], {}, {}
    for task in old:
        state = states.get(task.task_id)
        if state is None:
            settled.append((task, "missing"))         # deleted in the CRM: nothing left to defer
        elif state.done:
            settled.append((task, "closed"))          # the rep closed it after all: leave it so
        else:
            body = state.body or ""
            bodies[task.task_id] = body if task.note in body else f"{body}\n\n{task.note}".strip()
            by_id[task.task_id] = task
    if not bodies:
        return settled
    try:
        results = connector.defer_tasks(bodies)
    except (RetriableError, TokenExpiredError) as exc:      # may work later (TokenExpiredError: after reconnecting)
        logger.warning("%s: %d old task(s) not deferred yet (%s: %s); the next SLA pass tries again", kind,
                       len(bodies), type(exc).__name__, exc)
        return settled
    except FatalError as exc:       # refused as a whole (e.g. the portal's picklist lacks the status): never retried
        logger.error("%s refused to defer %d old task(s): %s %s", kind, len(bodies), exc.code, exc)
        return settled + [(task, f"refused {exc.code}") for task in by_id.values()]
    for result in results:
        task = by_id[result.key]
        if result.ok:
            settled.append((task, "deferred"))
            logger.info("lead %s: previous owner's %s task %s set to Deferred", task.contact_id, kind, task.task_id)
        elif result.error_code in RETRY_LATER_CODES:
            logger.warning("lead %s: %s task %s not deferred yet (%s)", task.contact_id, kind, task.task_id,
                           result.error_code)
        else:
            settled.append((task, f"refused {result.error_code}"))
            logger.error("lead %s: %s refused to defer task %s: %s", task.contact_id, kind, task.task_id,
                         result.error_code)
    return settled


def _deferral_note(assignment: Assignment) -> str:
    """The line added to the old task's body (its reassignment time keeps it the same on every retry)."""
    return f"Deferred by lead hub on {assignment.closed_at:%Y-%m-%d %H:%M} UTC: {assignment.note}."


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
