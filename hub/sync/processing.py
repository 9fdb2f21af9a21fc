"""Turning a stored event into changes of the canonical contact.

`process_event` runs inside the transaction `hub.sync.jobs` opened for the event: the effects and
the event's status commit together. The event's vendor module (webhooks.registry) maps its kind to
ContactChange values through `HANDLERS`; each change is applied by action (upsert, delete, erase,
merge) inside a SAVEPOINT, re-resolved a bounded number of times when a concurrent worker created
the same person first (unique email / identity). An event that changes nothing is reported by
returning "ignored" with the reason in `event.last_error` (and a metric and a log line).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from hub import defaults, metrics
from hub.changes import ContactChange
from hub.db import is_postgres
from hub.exceptions import UnsupportedEventError
from hub.logs import mask_email
from hub.mappings.transforms import epoch_ms
from hub.models import Activity, Contact, Event
from hub.rules.schedule import schedule_evaluation
from hub.sync import decisions, deletions, identity, owners
from hub.sync.apply import (
    CRM_SYSTEMS,
    Stamp,
    apply_values,
    field_stamp,
    is_newer,
    normalise,
    normalise_phones,
    phone_candidate,
    stored_stamp,
)
from hub.sync.echo import drop_echoes
from hub.sync.identity import ExternalId
from hub.sync.push import schedule_push

logger = logging.getLogger(__name__)

ERASED_PAYLOAD = {"erased": True}          # what a privacy erasure leaves of an event's payload


@dataclass
class EventContext:
    """What every change of one event shares."""

    workspace_id: str
    event: Event
    change_index: int = 0                  # position of the change being applied (activity keys)
    runtime: Any = None                    # for the owner directory (hub.sync.owners)
    # (system, external id) -> linked contact id, as apply_change read it before its savepoint; the
    # upsert inside takes it once instead of reading it again (a unique-key retry reads afresh)
    known_links: dict = field(default_factory=dict)

    @property
    def event_id(self) -> int:
        return int(self.event.id)

    def fallback_time(self) -> datetime:
        return self.event.occurred_at or self.event.received_at


@dataclass
class Outcome:
    """What applying one change did."""

    ignored: str | None = None             # reason, when nothing was applied
    contact_id: str | None = None
    changed: set[str] = field(default_factory=set)
    evaluate: bool = False                 # the contact or its activities changed
    origin: str | None = None


# --- the event ----------------------------------------------------------------------------------

def receiver_module(source: str):
    from webhooks import registry

    return registry.CRM_RECEIVERS.get(source) or registry.SOURCE_RECEIVERS.get(source)


def read_changes(source: str, kind: str, payload: dict | None) -> list[ContactChange] | None:
    """The changes the event's vendor module reads from its payload; None when it has no handler."""
    handler = getattr(receiver_module(source), "HANDLERS", {}).get(kind)
    return None if handler is None else handler(payload or {})


def process_event(session, runtime, event: Event, parsed: list | Exception | None = None) -> str:
    """Apply `event` to the canonical contacts: "processed", or "ignored" with the reason in last_error.

    `parsed`: what `read_changes` gave for this event just before (changes or the error), if known."""
    if not _hold_write_lock(session, event):
        return event.status                 # SQLite: another worker finished it while we waited for the lock
    if event.payload == ERASED_PAYLOAD:
        return _ignored(event, "erased_payload", "the payload was erased with the person it named")
    try:
        if isinstance(parsed, Exception):
            raise parsed
        changes = parsed if parsed is not None else read_changes(event.source, event.kind, event.payload)
    except UnsupportedEventError as exc:
        return _ignored(event, exc.reason)
    if changes is None:
        return _ignored(event, "unknown_kind", f"no handler for {event.source} event {event.kind!r}")
    if not changes:
        return _ignored(event, "no_change", "the event carries no contact change")
    ctx = EventContext(workspace_id=event.workspace_id, event=event, runtime=runtime)
    outcomes = []
    for index, change in enumerate(changes):
        ctx.change_index = index
        outcomes.append(apply_change(session, ctx, change))
    applied = [o for o in outcomes if o.ignored is None]
    if not applied:
        reasons = sorted({o.ignored for o in outcomes if o.ignored})
        if reasons == ["erased_subject"]:
            event.payload = ERASED_PAYLOAD         # a late event about an erased person keeps no personal data
        return _ignored(event, reasons[0] if len(reasons) == 1 else "ignored", ", ".join(reasons))
    _run_hooks(session, ctx, applied)
    contact_ids = [o.contact_id for o in applied if o.contact_id]
    if contact_ids:
        event.contact_id = contact_ids[-1]
    return "processed"


def _ignored(event: Event, reason: str, detail: str | None = None) -> str:
    """Stored, not acted on: the reason goes to last_error (jobs.py clears it before processing)."""
    metrics.EVENTS_IGNORED.labels(source=event.source, reason=reason).inc()
    event.last_error = f"{reason}: {detail}" if detail and detail != reason else reason
    logger.info("event %s (%s %s) ignored: %s", event.id, event.source, event.kind, event.last_error)
    return "ignored"


def _hold_write_lock(session, event: Event) -> bool:
    """SQLite: begin the write transaction now (SQLite locks the database, not rows). False if the
    event is no longer pending once the lock is ours.

    pysqlite only opens a transaction before DML, and a SAVEPOINT outside one would commit on
    release; touching the event row first makes every later savepoint nest inside this transaction,
    and serialises workers the way PostgreSQL's FOR UPDATE on the event row does (jobs.py).
    """
    if is_postgres(session.get_bind()):
        return True
    session.execute(update(Event).where(Event.id == event.id).values(attempts=Event.attempts)
                    .execution_options(synchronize_session=False))
    session.refresh(event, ["status"])
    return event.status == "pending"


def _run_hooks(session, ctx: EventContext, outcomes: list[Outcome]) -> None:
    changed: dict[tuple[str, str], set[str]] = {}
    evaluate: list[str] = []
    for outcome in outcomes:
        if outcome.contact_id is None:
            continue
        if outcome.changed:
            changed.setdefault((outcome.contact_id, outcome.origin or ""), set()).update(outcome.changed)
        if (outcome.changed or outcome.evaluate) and outcome.contact_id not in evaluate:
            evaluate.append(outcome.contact_id)
    live = _live(session, outcomes, evaluate)
    for (contact_id, origin), fields in changed.items():
        if contact_id in live:
            schedule_push(session, ctx.workspace_id, contact_id, fields, origin)
    for contact_id in evaluate:
        if contact_id in live:
            schedule_evaluation(session, ctx.workspace_id, contact_id)


def _live(session, outcomes: list[Outcome], contact_ids: list[str]) -> set[str]:
    """Which of `contact_ids` still exist. A single change leaves its contact in place (an upsert's
    email merge keeps it as the survivor); a later change of the same event may merge it away."""
    if len(outcomes) == 1:
        return set(contact_ids)
    return set(session.scalars(select(Contact.id).where(Contact.id.in_(contact_ids)))) if contact_ids else set()


# --- one change -----------------------------------------------------------------------------------

def apply_change(session, ctx: EventContext, change: ContactChange) -> Outcome:
    """Apply one change in a savepoint; a unique-key race with another worker re-resolves (bounded)."""
    overruled_owner = False
    linked_id = None
    if change.system in CRM_SYSTEMS and change.action == "upsert":
        if change.external_id:
            linked_id = identity.linked_contact_id(session, ctx.workspace_id, _ref(change))
            ctx.known_links[(change.system, str(change.external_id))] = linked_id
        kept = drop_echoes(session, ctx.workspace_id, change, linked_id)
        overruled_owner = owners.overruled(session, ctx.workspace_id, change, kept)
        change = kept
        if ctx.runtime is not None:
            change = owners.resolve_change(session, ctx.runtime, ctx.workspace_id, change)
    action = ACTIONS.get(change.action)
    if action is None:
        return Outcome(ignored=f"unsupported_action:{change.action}")
    if action is upsert and linked_id and not overruled_owner and _carries_nothing(change):
        return Outcome(contact_id=linked_id, origin=change.system)   # e.g. the echo of the hub's own write
    for attempt in range(1, defaults.IDENTITY_RESOLVE_ATTEMPTS + 1):
        try:
            with session.begin_nested():
                outcome = action(session, ctx, change)
                session.flush()
            outcome.origin = change.system
            if overruled_owner and outcome.contact_id:
                owners.restore_owner(session, ctx.workspace_id, outcome.contact_id)
            return outcome
        except IntegrityError:
            ctx.known_links.clear()
            if attempt == defaults.IDENTITY_RESOLVE_ATTEMPTS:
                raise
            logger.info("event %s: another worker wrote the same person first; resolving again (%s)",
                        ctx.event_id, attempt)
    raise AssertionError("unreachable")


def _carries_nothing(change: ContactChange) -> bool:
    """No value, consent or activity left to apply (every field was an echo or unchanged)."""
    return not change.fields and not change.custom and not change.consent and change.activity is None


def _stamp(ctx: EventContext, change: ContactChange) -> Stamp:
    return Stamp(epoch_ms(change.changed_at or ctx.fallback_time()), ctx.event_id, change.system)


def _ref(change: ContactChange, external_id: str | None = None) -> ExternalId | None:
    external_id = external_id or change.external_id
    if not external_id:
        return None
    return ExternalId(change.system, str(external_id), change.object_type)


_UNKNOWN = object()


def upsert(session, ctx: EventContext, change: ContactChange) -> Outcome:
    """Resolve (or create) the person, then offer every value with its vendor time."""
    ws = ctx.workspace_id
    stamp = _stamp(ctx, change)
    values = normalise(change)
    email = values.fields.get("email")
    ref = _ref(change)
    if identity.erased(session, ws, ref, email, stamp.at_ms):
        return Outcome(ignored="erased_subject")
    revived_contact_id = linked_id = None
    if ref is not None:
        known = ctx.known_links.pop((ref.system, ref.external_id), _UNKNOWN)
        linked_id = identity.linked_contact_id(session, ws, ref) if known is _UNKNOWN else known
        stone = None if linked_id else identity.tombstone(session, ws, ref)   # a linked record has none
        if identity.is_late(stone, stamp.at_ms):
            return Outcome(ignored="deleted_identity")
        revived_contact_id = identity.revive(session, stone)
    phone = phone_candidate(values)
    if ref is None and not email and not phone:
        return Outcome(ignored="no_identifier")      # nobody to attach it to; the raw event stays stored
    contact = identity.resolve(session, ws, ref, email, phone, linked_id=linked_id)
    if contact is None and revived_contact_id:
        contact = identity.lock_contact(session, revived_contact_id)
    created = contact is None
    if created:
        contact = identity.new_contact(session, ws)
    linked = identity.link(session, ws, contact, ref) if ref is not None and contact.id != linked_id else False
    changed = set()
    email_stamp = field_stamp(stamp, change.field_times, "email")
    if email and email != contact.email and is_newer(email_stamp, stored_stamp(contact, "email")):
        taken, merged = _take_over_email(session, ws, contact, email, change)
        changed |= merged
        if not taken:
            values.fields.pop("email")
    normalise_phones(values, values.fields.get("country") or contact.country)
    changed |= apply_values(contact, values, stamp, consent_source=change.system, field_times=change.field_times)
    activity_added = _add_activity(session, ctx, contact, change)
    if created:
        logger.info("event %s: new contact %s (%s)", ctx.event_id, contact.id, mask_email(email))
    return Outcome(contact_id=contact.id, changed=changed, evaluate=created or linked or activity_added)


def _take_over_email(session, ws: str, contact: Contact, email: str, change: ContactChange) -> tuple[bool, set[str]]:
    """The contact's email changes: (whether it takes the email, the keys a merge changed).

    Emails are unique per workspace; when another contact holds the email, decisions.record_email_change
    says whether they are one person (merged) or a conflict (the email is not taken)."""
    holder = identity.by_email(session, ws, email)
    if holder is None or holder.id == contact.id:
        return True, set()
    if not decisions.record_email_change(session, ws, change.system, change.external_id, contact.id, holder.id,
                                         email):
        return False, set()
    logger.info("contact %s and %s share %s: merging", contact.id, holder.id, mask_email(email))
    return True, identity.merge_contacts(session, contact, holder)


def _add_activity(session, ctx: EventContext, contact: Contact, change: ContactChange) -> bool:
    spec = change.activity
    if spec is None:
        return False
    # Deterministic per (event, change): a re-run or a savepoint retry finds the row it wrote before.
    key = f"event:{ctx.event_id}:{spec.kind}" + (f":{ctx.change_index}" if ctx.change_index else "")
    exists = session.scalar(select(Activity.id).where(
        Activity.workspace_id == ctx.workspace_id, Activity.idempotency_key == key))
    if exists is not None:
        return False
    session.add(Activity(workspace_id=ctx.workspace_id, contact_id=contact.id, kind=spec.kind,
                         occurred_at=spec.occurred_at or change.changed_at or ctx.fallback_time(),
                         properties=dict(spec.properties), event_id=ctx.event_id, idempotency_key=key))
    return True


def delete(session, ctx: EventContext, change: ContactChange) -> Outcome:
    """The CRM deleted its record: unlink the identity; the canonical contact stays (DESIGN). With
    `deletions: propagate` the linked records in the other CRM are deleted too (hub.sync.deletions)."""
    ref = _ref(change)
    if ref is None:
        return Outcome(ignored="no_external_id")
    if deletions.is_echo(session, ctx.workspace_id, ref):
        decisions.record_deletion_echo(session, ctx.workspace_id, ref.system, ref.external_id)
        return Outcome(ignored="deletion_echo")
    contact_id = identity.unlink(session, ctx.workspace_id, ref, _stamp(ctx, change).at_ms)
    decisions.record_deletion(session, ctx.workspace_id, ref.system, ref.external_id, contact_id)
    return Outcome(contact_id=contact_id, evaluate=contact_id is not None)


def erase(session, ctx: EventContext, change: ContactChange) -> Outcome:
    """Privacy deletion: erase the person's data, remember only one-way hashes of their identifiers."""
    ws = ctx.workspace_id
    ref = _ref(change)
    if ref is None:
        return Outcome(ignored="no_external_id")
    subjects = {identity.identity_subject(ref.system, ref.external_id)}
    contact = identity.by_identity(session, ws, ref)
    if contact is None:
        stone = identity.tombstone(session, ws, ref)
        contact = identity.lock_contact(session, stone.contact_id) if stone and stone.contact_id else None
    if contact is not None:
        subjects |= identity.erase_contact(session, contact, keep_event_id=ctx.event_id)
    identity.forget_tombstones(session, ws, ref)
    identity.record_erasure(session, ws, subjects)
    logger.info("event %s: erased %s subject(s)%s", ctx.event_id, len(subjects),
                f" of contact {contact.id}" if contact is not None else " (no contact known)")
    return Outcome(contact_id=None)


def merge(session, ctx: EventContext, change: ContactChange) -> Outcome:
    """A CRM merge: every id involved becomes an identity of one canonical contact."""
    ws = ctx.workspace_id
    primary = _ref(change)
    if primary is None:
        return Outcome(ignored="no_external_id")
    refs = [primary] + [_ref(change, i) for i in change.merged_external_ids]
    if change.new_external_id:
        refs.append(_ref(change, change.new_external_id))
    refs = [r for r in refs if r is not None and not identity.erased(session, ws, r, None, 0)]
    linked = identity.contacts_of(session, ws, refs)
    contacts = {c.id: c for c in identity.lock_many(session, set(linked.values()))}
    # The primary record's contact survives (it holds the history), else the new record's, else any.
    preferred = [primary] + ([_ref(change, change.new_external_id)] if change.new_external_id else [])
    survivor_id = next((linked[r.external_id] for r in preferred if linked.get(r.external_id) in contacts),
                       None) or next(iter(sorted(contacts)), None)
    survivor = contacts[survivor_id] if survivor_id else identity.new_contact(session, ws)
    changed: set[str] = set()
    for contact_id in sorted(contacts):
        if contact_id != survivor.id:
            changed |= identity.merge_contacts(session, survivor, contacts[contact_id])
    for ref in refs:
        identity.link(session, ws, survivor, ref)
        identity.forget_tombstones(session, ws, ref)
    decisions.record_merge(session, ws, primary.system, survivor.id, [r.external_id for r in refs])
    return Outcome(contact_id=survivor.id, changed=changed, evaluate=True)


def ignore(session, ctx: EventContext, change: ContactChange) -> Outcome:
    return Outcome(ignored="ignored_by_handler")


ACTIONS = {
    "upsert": upsert,
    "associate": upsert,
    "delete": delete,
    "erase": erase,
    "merge": merge,
    "ignore": ignore,
}
