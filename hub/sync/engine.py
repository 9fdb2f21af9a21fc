"""The push engine: what to write to each CRM for a set of changed contacts, and writing it.

For every claimed contact and connected CRM it computes, field by field from the canonical
contact and the field map's direction rules, the values the CRM should get; fields whose target
already holds the value (per the `crm_snapshot` the echo module keeps) are skipped, so a change
is never written back to the CRM it came from. Writes are batched (HubSpot batch upsert ≤100,
Salesforce sObject Collections ≤200) through the connectors, which rate-limit, retry and refresh
tokens. Before a call, every value is entered in the echo ledger (so its webhook echo is known
even if it arrives before the results commit); after it, new CRM ids (identities), snapshots,
sync_log rows for refused/truncated values and failed records, and the pending rows' fate commit
in one transaction. A bad record fails alone, logged with the vendor's error.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from hub import defaults
from hub.connectors.base import CrmConnector, CrmRecord, WriteResult, chunks
from hub.db import insert_ignoring_duplicates, transaction
from hub.exceptions import FatalError, RetriableError
from hub.mappings import fields as field_map
from hub.mappings.transforms import blank
from hub.models import (
    Connection,
    Contact,
    CrmSnapshot,
    Identity,
    IdentityTombstone,
    SegmentMembership,
    SyncLog,
    Workspace,
)
from hub.sync import echo, owners
from hub.sync.push import Claimed, settle
from hub.sync.settings import sync_settings

logger = logging.getLogger(__name__)

# Contact attribute read for a canonical field (the rest are plain columns of the same name).
CONTACT_ATTRIBUTES = {"score": "score", "grade": "grade", "score_reasons": "score_reasons"}
DEFAULT_OBJECT_TYPE = {"hubspot": "contact", "salesforce": "Lead"}


@dataclass
class PlannedWrite:
    """One record's write: canonical values (ledger, snapshot) and the CRM properties sent."""

    contact_id: str
    system: str
    object_type: str
    object_id: str | None
    values: dict[str, Any] = field(default_factory=dict)        # canonical field -> value as written
    properties: dict[str, Any] = field(default_factory=dict)    # CRM field -> value
    notes: list[tuple[str, str, str]] = field(default_factory=list)   # (field, status, detail)
    email: str | None = None
    by_id: bool = False            # written by record id, not upserted by email (HubSpot: the email moves)

    @property
    def key(self) -> str:
        return self.object_id or (self.email or "")


@dataclass
class Linked:
    """A CRM record the contact is known by (identity, or found by email just now)."""

    object_id: str
    object_type: str
    snapshot: dict
    new: bool = False


@dataclass
class SyncState:
    workspace_id: str
    mapping: field_map.Mapping
    create: bool
    contacts: dict[str, Contact]
    links: dict[tuple[str, str], Linked]                        # (contact_id, system) -> record
    outside: set[str] = field(default_factory=set)             # contacts outside the create segment
    deleted: set[tuple[str, str]] = field(default_factory=set)  # (contact_id, system): the CRM deleted it
    owner_ids: dict[str, dict | None] = field(default_factory=dict)   # system -> owner email -> CRM user id


def may_create(state: SyncState, contact: Contact, system: str) -> bool:
    """Creation rules: an email, creation on, inside the create segment (if one is set), and not a
    record the CRM deleted (the hub does not bring back what a CRM user deleted; a restore relinks it)."""
    return state.create and bool(contact.email) and contact.id not in state.outside \
        and (contact.id, system) not in state.deleted


# --- reading the state --------------------------------------------------------------------------

def contact_value(contact: Contact, canonical: str) -> Any:
    return getattr(contact, CONTACT_ATTRIBUTES.get(canonical, canonical), None)


def load_state(runtime, workspace_id: str, contact_ids: list[str], systems: list[str]) -> SyncState:
    with transaction(runtime.engine) as session:
        workspace = session.get(Workspace, workspace_id)
        settings = workspace.settings or {}
        contacts = {c.id: c for c in session.scalars(select(Contact).where(
            Contact.workspace_id == workspace_id, Contact.id.in_(contact_ids)))}
        rows = session.execute(select(Identity.contact_id, Identity.system, Identity.external_id, Identity.object_type)
                               .where(Identity.workspace_id == workspace_id, Identity.contact_id.in_(contact_ids),
                                      Identity.system.in_(systems)).order_by(Identity.id)).all()
        ids = {(system, external_id) for _, system, external_id, _ in rows}
        snapshots = {(s.system, s.object_id): dict(s.values or {}) for s in session.scalars(select(CrmSnapshot).where(
            CrmSnapshot.workspace_id == workspace_id, CrmSnapshot.object_id.in_([i for _, i in ids] or [""])))}
        links: dict[tuple[str, str], Linked] = {}
        for contact_id, system, external_id, object_type in rows:
            current = links.get((contact_id, system))
            # A converted Lead lives on as a Contact: prefer the Contact, else the newest identity.
            if current is None or object_type == "Contact" or current.object_type != "Contact":
                links[(contact_id, system)] = Linked(external_id, object_type or DEFAULT_OBJECT_TYPE[system],
                                                     snapshots.get((system, external_id), {}))
        options = sync_settings(settings)
        return SyncState(workspace_id, field_map.load_mapping(settings), options.create, contacts, links,
                         outside=_outside_segment(session, contact_ids, options.create_segment),
                         deleted=_deleted_records(session, workspace_id, contact_ids, systems))


def _outside_segment(session, contact_ids: list[str], segment: str | None) -> set[str]:
    if not segment:
        return set()
    inside = set(session.scalars(select(SegmentMembership.contact_id).where(
        SegmentMembership.contact_id.in_(contact_ids), SegmentMembership.segment == segment,
        SegmentMembership.left_at.is_(None))))
    return set(contact_ids) - inside


def _deleted_records(session, workspace_id: str, contact_ids: list[str], systems: list[str]) -> set[tuple[str, str]]:
    return set(session.execute(select(IdentityTombstone.contact_id, IdentityTombstone.system).where(
        IdentityTombstone.workspace_id == workspace_id, IdentityTombstone.contact_id.in_(contact_ids),
        IdentityTombstone.system.in_(systems))).all())


def find_unlinked(state: SyncState, system: str, connector: CrmConnector) -> None:
    """Salesforce has no upsert by email: look the unlinked contacts up before creating Leads."""
    emails = {c.email: c.id for c in state.contacts.values()
              if (c.id, system) not in state.links and may_create(state, c, system)}
    if not emails:
        return
    found = connector.find_by_email(sorted(emails))
    for email, record in found.items():
        contact_id = emails.get((email or "").lower())
        if contact_id is None or not record.id:
            continue
        snapshot = field_map.crm_to_canonical(state.mapping, system, record.properties, record.object_type)
        state.links[(contact_id, system)] = Linked(record.id, record.object_type, snapshot, new=True)


# --- planning -----------------------------------------------------------------------------------

def plan_contact(state: SyncState, contact: Contact, system: str, changed: set[str]) -> PlannedWrite | None:
    """The write one CRM needs for one contact, or None."""
    linked = state.links.get((contact.id, system))
    if linked is None and not may_create(state, contact, system):
        return None
    object_type = linked.object_type if linked else DEFAULT_OBJECT_TYPE[system]
    plan = PlannedWrite(contact.id, system, object_type, linked.object_id if linked else None, email=contact.email)
    creating = linked is None
    snapshot = linked.snapshot if linked else {}
    for rule in field_map.writable_rules(state.mapping, system, object_type):
        if not creating and rule.canonical not in changed:
            continue
        _plan_field(plan, rule, contact_value(contact, rule.canonical), snapshot, creating, state.mapping,
                    owner_ids=state.owner_ids.get(system))
    if not plan.values and not plan.notes:
        return None
    if system == "hubspot" and plan.values:
        if linked is not None and email_moves(contact, snapshot, plan):
            plan.by_id = True      # an upsert by the new email would create a second HubSpot contact
        else:
            plan.properties.setdefault("email", contact.email)     # HubSpot upserts by email
    return plan


def email_moves(contact: Contact, snapshot: dict, plan: PlannedWrite) -> bool:
    """The linked record's email is being changed, or holds another email than the contact (a refused
    change, see processing's email conflicts): the write must name the record by id."""
    if "email" in plan.values:
        return True
    known = snapshot.get("email")
    return not blank(known) and str(known).strip().lower() != (contact.email or "")


def _plan_field(plan: PlannedWrite, rule: field_map.FieldRule, value: Any, snapshot: dict, creating: bool,
                mapping: field_map.Mapping, owner_ids: dict[str, str] | None = None) -> None:
    """Plan one field's write; `owner_ids` (email -> CRM user id, None: directory unavailable) serves the owner."""
    system = plan.system
    if creating and blank(value) and not _required_on_create(rule, plan):
        return
    if not field_map.outbound_allowed(rule, system, value, snapshot.get(rule.canonical)):
        return
    if rule.needs_lookup:       # the owner's email -> this CRM's user id
        value, why_not = owners.crm_owner_id(system, value, owner_ids)
        if why_not:
            plan.notes.append((rule.canonical, "skipped", why_not))
        if value is None:
            return
    try:
        out = field_map.outbound_value(rule, system, value, mapping, plan.object_type)
    except field_map.RefusedValue as exc:
        plan.notes.append((rule.canonical, "refused", str(exc)))
        return
    if out.skip:
        return
    if rule.canonical in snapshot and field_map.same_value(rule, system, snapshot[rule.canonical], out.value):
        return
    if out.truncated:
        plan.notes.append((rule.canonical, "truncated",
                           f"{rule.crm_field(system, plan.object_type)}: cut to {len(out.value)} characters"))
    plan.values[rule.canonical] = out.value
    plan.properties[rule.crm_field(system, plan.object_type)] = out.value


def _required_on_create(rule: field_map.FieldRule, plan: PlannedWrite) -> bool:
    return plan.system == "salesforce" and plan.object_type == "Lead" \
        and rule.crm_field("salesforce", "Lead") in field_map.SALESFORCE_REQUIRED_LEAD_FIELDS


# --- writing ------------------------------------------------------------------------------------

@dataclass
class Outcome:
    plan: PlannedWrite
    result: WriteResult | None = None
    retry_after: float | None = None         # set: retriable failure


def write_batches(connector: CrmConnector, plans: list[PlannedWrite], batch_size: int) -> list[Outcome]:
    """Write the plans in batches; a batch that fails as a whole is retried later, records fail alone."""
    by_id = [p for p in plans if p.by_id]
    outcomes = _write(connector, connector.batch_update, by_id, batch_size) if by_id else []
    return outcomes + _write(connector, connector.batch_upsert, [p for p in plans if not p.by_id], batch_size)


def _write(connector: CrmConnector, call, plans: list[PlannedWrite], batch_size: int) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for batch in chunks(plans, batch_size):
        records = [CrmRecord(p.object_type, p.object_id, dict(p.properties)) for p in batch]
        try:
            results = call(records)
        except RetriableError as exc:
            logger.warning("%s batch of %s deferred: %s", connector.kind, len(batch), exc)
            outcomes.extend(Outcome(p, retry_after=exc.retry_after or 0.0) for p in batch)
            continue
        except FatalError as exc:     # the whole call was refused (auth): nothing was written
            logger.warning("%s batch of %s refused: %s", connector.kind, len(batch), exc)
            outcomes.extend(Outcome(p, retry_after=0.0) for p in batch)
            continue
        outcomes.extend(_match_results(connector.kind, batch, results))
    return outcomes


def _match_results(system: str, batch: list[PlannedWrite], results: list[WriteResult]) -> list[Outcome]:
    by_email = system == "hubspot" and not any(p.by_id for p in batch)       # HubSpot upserts answer by email
    by_key = {(r.key or "").lower() if by_email else r.key: r for r in results}
    matched = []
    for index, plan in enumerate(batch):
        key = (plan.email or "").lower() if by_email else plan.key
        result = by_key.get(key)
        if result is None and system == "salesforce" and len(results) == len(batch):
            result = results[index]        # sObject Collections answers in input order
        matched.append(Outcome(plan, result or WriteResult(key=key, id=None, ok=False, error_code="NO_RESULT",
                                                           error_message="no result for this record")))
    return matched


def push(runtime, workspace_id: str, claimed: list[Claimed], connectors: dict | None = None) -> dict:
    """Push the claimed contacts to every connected CRM; returns counts."""
    connectors = connectors if connectors is not None else connectors_for(runtime, workspace_id)
    systems = [s for s in field_map.SYSTEMS if s in connectors]
    by_contact = {c.contact_id: c for c in claimed}
    state = load_state(runtime, workspace_id, list(by_contact), systems)
    retry_after: dict[str, float] = {}
    outcomes: list[Outcome] = []
    plans: dict[str, list[PlannedWrite]] = {}
    for system in systems:
        try:
            if system == "salesforce":
                find_unlinked(state, system, connectors[system])
            state.owner_ids[system] = _owner_ids(runtime, state, system, connectors[system], by_contact)
        except (RetriableError, FatalError) as exc:
            logger.warning("%s lookup failed, pushes wait: %s", system, exc)
            for contact_id in by_contact:
                retry_after[contact_id] = max(retry_after.get(contact_id, 0.0), getattr(exc, "retry_after", 0) or 0.0)
            continue
        plans[system] = [p for contact_id, item in by_contact.items() if contact_id in state.contacts
                         for p in [plan_contact(state, state.contacts[contact_id], system, item.fields)] if p]
    _record_intents(runtime, workspace_id, state, plans)
    for system, system_plans in plans.items():
        writable = [p for p in system_plans if p.values]
        outcomes.extend(write_batches(connectors[system], writable, _batch_size(system, connectors[system])))
        outcomes.extend(Outcome(p, WriteResult(key=p.key, id=p.object_id, ok=True)) for p in system_plans
                        if not p.values)
    for outcome in outcomes:
        if outcome.retry_after is not None:
            contact_id = outcome.plan.contact_id
            retry_after[contact_id] = max(retry_after.get(contact_id, 0.0), outcome.retry_after)
    with transaction(runtime.engine) as session:
        _record_results(session, workspace_id, state, outcomes)
        done = [c for c in claimed if c.contact_id not in retry_after]
        retry = [c for c in claimed if c.contact_id in retry_after]
        settle(session, workspace_id, done, retry, max(retry_after.values(), default=0.0))
    return _counts(outcomes, len(claimed), len(retry))


def _owner_ids(runtime, state: SyncState, system: str, connector: CrmConnector,
               by_contact: dict[str, Claimed]) -> dict[str, str] | None:
    """The CRM's user ids for the owners this batch may write to it (one directory listing, if any)."""
    rule = state.mapping.rule(owners.OWNER)
    if rule is None or not field_map.outbound_allowed(rule, system, "owner"):
        return {}
    emails = {contact.owner for contact_id, contact in state.contacts.items() if contact.owner and (
        owners.OWNER in by_contact[contact_id].fields or (contact_id, system) not in state.links)}
    return owners.owner_ids_for_push(runtime, state.workspace_id, system, connector, emails)


def _batch_size(system: str, connector: CrmConnector) -> int:
    limit = defaults.HUBSPOT_BATCH_SIZE if system == "hubspot" else defaults.SALESFORCE_BATCH_SIZE
    return min(limit, getattr(connector, "batch_size", limit) or limit)


def _record_intents(runtime, workspace_id: str, state: SyncState, plans: dict[str, list[PlannedWrite]]) -> None:
    """Ledger entries before the calls: the echo may come back before the results commit."""
    entries = [p for system_plans in plans.values() for p in system_plans if p.values]
    if not entries:
        return
    with transaction(runtime.engine) as session:
        for plan in entries:
            echo.record_writes(session, workspace_id, plan.system, plan.contact_id, plan.object_id, plan.values,
                               state.mapping)


def _snapshots(session, workspace_id: str, outcomes: list[Outcome]) -> dict[tuple[str, str], CrmSnapshot]:
    """The snapshots of the written records, one query per CRM."""
    wanted: dict[str, set[str]] = {}
    for outcome in outcomes:
        object_id = (outcome.result.id if outcome.result else None) or outcome.plan.object_id
        if object_id:
            wanted.setdefault(outcome.plan.system, set()).add(object_id)
    found = {}
    for system, ids in wanted.items():
        for snapshot in session.scalars(select(CrmSnapshot).where(
                CrmSnapshot.workspace_id == workspace_id, CrmSnapshot.system == system,
                CrmSnapshot.object_id.in_(sorted(ids)))):
            found[(system, snapshot.object_id)] = snapshot
    return found


def _record_results(session, workspace_id: str, state: SyncState, outcomes: list[Outcome]) -> None:
    snapshots = _snapshots(session, workspace_id, outcomes)
    for key, linked in state.links.items():
        if linked.new:
            _link(session, workspace_id, key[0], key[1], linked.object_id, linked.object_type)
            echo.remember_values(session, workspace_id, key[1], linked.object_id, linked.snapshot)
    for outcome in outcomes:
        plan, result = outcome.plan, outcome.result
        for name, status, detail in plan.notes:
            session.add(SyncLog(workspace_id=workspace_id, target=plan.system, operation=f"push.{name}",
                                object_ids=[plan.object_id or plan.contact_id], status=status, error=detail))
        if result is None:
            continue
        if not result.ok:
            session.add(SyncLog(workspace_id=workspace_id, target=plan.system, operation="push.record",
                                object_ids=[plan.object_id or plan.contact_id], status="error",
                                error=f"{result.error_code}: {result.error_message}"[:2000]))
            continue
        object_id = result.id or plan.object_id
        if object_id and plan.object_id is None:
            _link(session, workspace_id, plan.contact_id, plan.system, object_id,
                  result.object_type or plan.object_type)
        if object_id and plan.values:
            echo.remember_values(session, workspace_id, plan.system, object_id, plan.values,
                                 snapshot=snapshots.get((plan.system, object_id)))


def _link(session, workspace_id: str, contact_id: str, system: str, object_id: str, object_type: str) -> None:
    """Record a CRM id for the contact; a webhook may have linked it first (unique key: keep that)."""
    insert_ignoring_duplicates(session, Identity, ["workspace_id", "system", "external_id"],
                               workspace_id=workspace_id, system=system, external_id=object_id,
                               object_type=object_type, contact_id=contact_id)


def _counts(outcomes: list[Outcome], claimed: int, retried: int) -> dict:
    counts = {"contacts": claimed, "retry": retried, "written": 0, "failed": 0, "created": 0}
    for outcome in outcomes:
        if outcome.result is None or not outcome.plan.values:
            continue
        if outcome.result.ok:
            counts["written"] += 1
            counts["created"] += int(outcome.plan.object_id is None)
        else:
            counts["failed"] += 1
    return counts


def connectors_for(runtime, workspace_id: str) -> dict[str, CrmConnector]:
    """The workspace's connected CRMs, built by the connector registry."""
    from hub.connectors import registry

    with transaction(runtime.engine) as session:
        kinds = set(session.scalars(select(Connection.kind).where(Connection.workspace_id == workspace_id)))
    return {kind: registry.connector_for(runtime, workspace_id, kind) for kind in field_map.SYSTEMS if kind in kinds}
