"""Echo ledger: recognises CRM changes that only echo the hub's own writes, field by field.

The push engine records every value it writes (`record_writes`: system, contact, object id,
canonical field, value hash, time) before the call goes out, so the webhook that echoes it back
is recognised even when it arrives before the write's results are committed. `drop_echoes`
(called by processing for every incoming change) removes from a change:

- fields whose value matches a ledger entry written at or before the change (the echo);
- HubSpot fields changed by the hub's own app (`changeSource` INTEGRATION + `sourceId` == app id);
- Salesforce fields whose value the hub already knew the record to hold (an Outbound Message
  carries the whole record: only the fields that differ from the last known snapshot changed);
- fields the field map does not let this CRM set (hub_always, forward only, crm_always of the
  other CRM, blank most_recent values).

A Salesforce message last modified by the integration user may still carry a person's edit to
another field: it is judged field by field, never skipped whole. It also keeps `crm_snapshot`,
the hub's view of what each CRM record holds, which the push engine uses to skip writes.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Iterable

from sqlalchemy import delete, select

from hub import defaults
from hub.changes import ContactChange
from hub.db import insert_ignoring_duplicates
from hub.exceptions import InvalidValueError
from hub.mappings import fields as field_map
from hub.mappings.transforms import blank, epoch_ms
from hub.sync import connected
from hub.models import Contact, CrmSnapshot, EchoLedger, Identity, utcnow

logger = logging.getLogger(__name__)

CRM_SYSTEMS = frozenset(field_map.SYSTEMS)
INTEGRATION_SOURCE = "INTEGRATION"


def value_hash(rule: field_map.FieldRule | None, system: str, value: Any) -> str:
    """A hash of the value in canonical form, so formatting differences hash alike."""
    normalised = value
    if rule is not None:
        try:
            normalised = field_map.inbound_value(rule, system, value)
        except (InvalidValueError, ValueError, TypeError):
            normalised = value
    if blank(normalised):
        normalised = None
    text = json.dumps(normalised, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# --- the ledger ------------------------------------------------------------------------------------

def record_writes(session, workspace_id: str, system: str, contact_id: str, object_id: str | None,
                  values: dict[str, Any], mapping: field_map.Mapping, written_at: datetime | None = None) -> None:
    """Remember that the hub is writing `values` (canonical field -> value as written) to a record."""
    written_at = written_at or utcnow()
    session.add_all([
        EchoLedger(workspace_id=workspace_id, system=system, contact_id=contact_id, object_id=object_id,
                   field=name, value_hash=value_hash(mapping.rule(name), system, value), written_at=written_at)
        for name, value in values.items()
    ])


def purge_ledger(session, older_than: datetime | None = None) -> int:
    cutoff = older_than or utcnow() - timedelta(seconds=defaults.ECHO_LEDGER_TTL_SECONDS)
    return session.execute(delete(EchoLedger).where(EchoLedger.written_at < cutoff)).rowcount or 0


def _ledger_hashes(session, workspace_id: str, system: str, contact_id: str | None,
                   names: Iterable[str]) -> dict[str, list[tuple[str, datetime]]]:
    if contact_id is None:
        return {}
    cutoff = utcnow() - timedelta(seconds=defaults.ECHO_LEDGER_TTL_SECONDS)
    rows = session.execute(select(EchoLedger.field, EchoLedger.value_hash, EchoLedger.written_at).where(
        EchoLedger.workspace_id == workspace_id, EchoLedger.system == system,
        EchoLedger.contact_id == contact_id, EchoLedger.field.in_(list(names)),
        EchoLedger.written_at >= cutoff)).all()
    found: dict[str, list[tuple[str, datetime]]] = {}
    for name, digest, written_at in rows:
        found.setdefault(name, []).append((digest, written_at))
    return found


def _matches_ledger(entries: list[tuple[str, datetime]], digest: str, changed_at: datetime | None) -> bool:
    skew = timedelta(seconds=defaults.ECHO_CLOCK_SKEW_SECONDS)
    return any(d == digest and (changed_at is None or changed_at >= written_at - skew)
               for d, written_at in entries)


# --- snapshots -------------------------------------------------------------------------------------

def load_snapshot(session, workspace_id: str, system: str, object_id: str) -> CrmSnapshot | None:
    return session.scalar(select(CrmSnapshot).where(
        CrmSnapshot.workspace_id == workspace_id, CrmSnapshot.system == system, CrmSnapshot.object_id == object_id))


def remember_values(session, workspace_id: str, system: str, object_id: str, values: dict[str, Any],
                    at_ms: int | None = None, record_time_ms: int | None = None,
                    snapshot: CrmSnapshot | None = None) -> CrmSnapshot:
    """Merge `values` (canonical field -> CRM value) into the record's snapshot."""
    snapshot = snapshot or load_snapshot(session, workspace_id, system, object_id)
    if snapshot is None:
        # Processing and the push engine may both see a record first: the unique key decides.
        insert_ignoring_duplicates(session, CrmSnapshot, ["workspace_id", "system", "object_id"],
                                   workspace_id=workspace_id, system=system, object_id=object_id, values={},
                                   field_times={}, previous={}, updated_at=utcnow())
        snapshot = load_snapshot(session, workspace_id, system, object_id)
    at_ms = at_ms if at_ms is not None else epoch_ms(utcnow())
    current = snapshot.values or {}
    replaced = {name: current[name] for name, value in values.items() if name in current and current[name] != value}
    snapshot.previous = {**(snapshot.previous or {}), **replaced}
    snapshot.values = {**current, **values}
    snapshot.field_times = {**(snapshot.field_times or {}), **{name: at_ms for name in values}}
    if record_time_ms is not None and (snapshot.record_time_ms or 0) < record_time_ms:
        snapshot.record_time_ms = record_time_ms
    return snapshot


def forget_values(session, workspace_id: str, system: str, object_id: str, names: set[str]) -> None:
    snapshot = load_snapshot(session, workspace_id, system, object_id)
    if snapshot is not None:
        snapshot.values = {k: v for k, v in (snapshot.values or {}).items() if k not in names}


# --- judging an incoming change ----------------------------------------------------------------------

def written_by_hub(change: ContactChange, settings: dict) -> bool:
    """The vendor's own marker says the hub's integration made this change."""
    if change.system == "hubspot":
        app_id = settings.get("app_id")
        return (change.change_source or "").upper() == INTEGRATION_SOURCE and app_id is not None \
            and str(change.source_id) == str(app_id)
    if change.system == "salesforce":
        user = settings.get("integration_user_id")
        return bool(user) and _same_sf_id(change.change_source, user)
    return False


def _same_sf_id(a: str | None, b: str | None) -> bool:
    """Salesforce ids compare on their case-sensitive 15-character form."""
    return bool(a) and bool(b) and str(a)[:15] == str(b)[:15]


def _contact_id(session, workspace_id: str, change: ContactChange, linked_id: str | None) -> str | None:
    """The contact the change is about: the one its CRM record is linked to, else the one with its email."""
    if linked_id:
        return linked_id
    email = change.fields.get("email")
    if blank(email):
        return None
    try:
        email = field_map.transforms.email(email)
    except InvalidValueError:
        return None
    return session.scalar(select(Contact.id).where(Contact.workspace_id == workspace_id, Contact.email == email))


def _field_time(change: ContactChange, name: str) -> datetime | None:
    return change.field_times.get(name) or change.changed_at


def drop_echoes(session, workspace_id: str, change: ContactChange, linked_id: str | None) -> ContactChange:
    """Return `change` without the fields that echo a write the hub made (judged field by field).

    `linked_id`: the contact the change's CRM record is linked to (hub.sync.identity.linked_contact_id)."""
    if change.system not in CRM_SYSTEMS or change.action != "upsert" or not change.fields:
        return change
    mapping = connected.workspace_mapping(session, workspace_id)
    ours = written_by_hub(change, connected.settings_of(session, workspace_id, change.system))
    contact_id = _contact_id(session, workspace_id, change, linked_id)
    ledger = _ledger_hashes(session, workspace_id, change.system, contact_id, change.fields)
    snapshot = load_snapshot(session, workspace_id, change.system, change.external_id) if change.external_id else None
    known = dict(snapshot.values or {}) if snapshot else {}
    before = dict(snapshot.previous or {}) if snapshot else {}
    kept: dict[str, Any] = {}
    seen: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    for name, raw in change.fields.items():
        rule = mapping.rule(name)
        verdict = _judge(change, rule, name, raw, ours, ledger.get(name, []), known, before)
        seen[name] = raw
        if verdict is None:
            kept[name] = raw
        else:
            reasons[name] = verdict
    older, uncertain = _order_against_writes(change, mapping, kept, known, ledger)
    _update_snapshot(session, workspace_id, change, snapshot, {k: v for k, v in seen.items() if k not in older})
    if uncertain:
        # The record held the hub's write and now shows a person's other value: which came last in
        # the CRM is unknown, so the next push writes the canonical value instead of assuming it is there.
        forget_values(session, workspace_id, change.system, change.external_id, uncertain)
    kept = _inbound_filter(session, workspace_id, mapping, change, kept, reasons, contact_id)
    if reasons:
        logger.debug("change from %s %s: dropped %s", change.system, change.external_id, reasons)
    return replace(change, fields=kept, field_times={k: v for k, v in change.field_times.items() if k in kept})


def _order_against_writes(change: ContactChange, mapping, kept: dict, known: dict,
                          ledger: dict) -> tuple[set[str], set[str]]:
    """Salesforce fields whose known value is the hub's write and whose incoming value differs:
    (made before that write: the CRM still holds the write, `older`; too close to tell, `uncertain`).

    LastModifiedDate has second precision; the hub's and the vendor's clocks are assumed to agree
    within SYNC_ORDER_TOLERANCE_SECONDS. A person's edit after the write updates the snapshot.
    """
    older, uncertain = set(), set()
    if change.system != "salesforce":
        return older, uncertain
    tolerance = timedelta(seconds=defaults.SYNC_ORDER_TOLERANCE_SECONDS)
    precision = timedelta(seconds=1)
    for name in kept:
        rule = mapping.rule(name)
        if rule is None or name not in known:
            continue
        digest = value_hash(rule, change.system, known[name])
        writes = [written_at for d, written_at in ledger.get(name, []) if d == digest]
        changed_at = _field_time(change, name)
        if not writes or changed_at is None:
            continue
        written_at = max(writes)
        if changed_at + precision + tolerance <= written_at:
            older.add(name)
        elif changed_at < written_at + tolerance:
            uncertain.add(name)
    return older, uncertain


def _judge(change: ContactChange, rule, name: str, raw: Any, ours: bool,
           ledger_entries: list, known: dict, before: dict) -> str | None:
    """Why the field is dropped ("echo", "unchanged", "carried"), or None to keep it."""
    if rule is None:
        return None
    if change.system == "hubspot" and ours:
        return "echo"
    if _matches_ledger(ledger_entries, value_hash(rule, change.system, raw), _field_time(change, name)):
        return "echo"
    if change.system != "salesforce" or name not in known:
        return None
    if field_map.same_value(rule, "salesforce", known[name], raw):
        return "unchanged"
    if name in before and field_map.same_value(rule, "salesforce", before[name], raw):
        # A whole-record message stamped with another field's edit time still carries the value this
        # field held before its latest known change: not an edit (it would overwrite a newer value).
        return "carried"
    return None


def _update_snapshot(session, workspace_id: str, change: ContactChange, snapshot, seen: dict) -> None:
    if not change.external_id or not seen:
        return
    changed_ms = epoch_ms(change.changed_at) if change.changed_at else None
    if change.system == "salesforce" and snapshot is not None and changed_ms is not None \
            and (snapshot.record_time_ms or 0) > changed_ms:
        return      # an older whole-record message: the snapshot already shows a newer state
    if snapshot is not None and changed_ms is not None:
        # A late HubSpot event must not hide a newer value (e.g. the hub's own later write).
        times = snapshot.field_times or {}
        seen = {name: value for name, value in seen.items() if times.get(name, 0) <= changed_ms}
        if not seen:
            return
    remember_values(session, workspace_id, change.system, change.external_id, seen, at_ms=changed_ms,
                    record_time_ms=changed_ms if change.system == "salesforce" else None, snapshot=snapshot)


def _inbound_filter(session, workspace_id: str, mapping: field_map.Mapping, change: ContactChange,
                    kept: dict, reasons: dict, contact_id: str | None) -> dict:
    """Drop fields the field map does not let this CRM set."""
    allowed = {}
    for name, raw in kept.items():
        rule = mapping.rule(name)
        if rule is None:
            allowed[name] = raw
            continue
        named_value = None
        if rule.direction == "crm_wins_unless_blank" and rule.crm != change.system:
            named_value = _named_crm_value(session, workspace_id, rule, contact_id)
        if field_map.inbound_allowed(rule, change.system, raw, named_value):
            allowed[name] = raw
        else:
            reasons[name] = "direction"
    return allowed


def _named_crm_value(session, workspace_id: str, rule, contact_id: str | None) -> Any:
    if contact_id is None:
        return None
    object_id = session.scalar(select(Identity.external_id).where(
        Identity.workspace_id == workspace_id, Identity.system == rule.crm, Identity.contact_id == contact_id))
    snapshot = load_snapshot(session, workspace_id, rule.crm, object_id) if object_id else None
    return (snapshot.values or {}).get(rule.canonical) if snapshot else None
