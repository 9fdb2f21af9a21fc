"""Identity resolution, merges, unlinking and erasure of canonical contacts.

Resolution order: the sending system's external id (identity table) -> normalised email -> E.164
phone. Contacts are locked (SELECT .. FOR UPDATE on PostgreSQL) as they are resolved, so two
workers never interleave writes to one contact's JSON columns; merges lock in id order.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from hub.models import (
    Activity,
    Base,
    Contact,
    Erasure,
    Event,
    Identity,
    IdentityTombstone,
    PendingPush,
    utcnow,
)
from hub.sync.apply import merge_values

logger = logging.getLogger(__name__)

PII_FIELDS = ("email", "phone", "mobile_phone", "first_name", "last_name", "company", "title", "country",
              "state", "city", "website", "company_size", "industry", "lifecycle_stage", "owner")
# Tables this module moves itself on a merge; any other table pointing at contact.id is moved generically.
MOVED_EXPLICITLY = frozenset({"identity", "activity", "contact"})


@dataclass(frozen=True)
class ExternalId:
    system: str
    external_id: str
    object_type: str | None = None


# --- hashes of erased people ------------------------------------------------------------------

def subject_hash(workspace_id: str, subject: str) -> str:
    """One-way hash of a person's identifier within a workspace (`email:<addr>` or `<system>:<id>`)."""
    return hashlib.sha256(f"{workspace_id}:{subject}".encode()).hexdigest()


def email_subject(email: str) -> str:
    return f"email:{email}"


def identity_subject(system: str, external_id: str) -> str:
    return f"{system}:{external_id}"


def _erasures(session, workspace_id: str, hashes: list[str]) -> dict[str, datetime]:
    if not hashes:
        return {}
    rows = session.execute(select(Erasure.subject_hash, Erasure.created_at).where(
        Erasure.workspace_id == workspace_id, Erasure.subject_hash.in_(hashes))).all()
    return {row[0]: row[1] for row in rows}


def erased(session, workspace_id: str, ref: ExternalId | None, email: str | None, at_ms: int) -> bool:
    """True when the change is about an erased person.

    An erased CRM record never comes back (its id is gone), so any event naming it is late. An erased
    email is refused for changes made before the erasure; a person who comes back later (a new
    form submission after the erasure) is a new relationship.
    """
    id_hash = subject_hash(workspace_id, identity_subject(ref.system, ref.external_id)) if ref else None
    mail_hash = subject_hash(workspace_id, email_subject(email)) if email else None
    found = _erasures(session, workspace_id, [h for h in (id_hash, mail_hash) if h])
    if id_hash in found:
        return True
    erased_at = found.get(mail_hash) if mail_hash else None
    if erased_at is None:
        return False
    return at_ms <= int(erased_at.astimezone(timezone.utc).timestamp() * 1000)


def record_erasure(session, workspace_id: str, subjects: set[str]) -> None:
    hashes = sorted({subject_hash(workspace_id, s) for s in subjects})
    known = set(_erasures(session, workspace_id, hashes))
    for value in hashes:
        if value not in known:
            session.add(Erasure(workspace_id=workspace_id, subject_hash=value, created_at=utcnow()))


# --- resolution ---------------------------------------------------------------------------------

def _locked(query):
    return query.with_for_update(of=Contact).execution_options(populate_existing=True)


def lock_contact(session, contact_id: str) -> Contact | None:
    return session.scalar(_locked(select(Contact).where(Contact.id == contact_id)))


def linked_contact_id(session, workspace_id: str, ref: ExternalId) -> str | None:
    """The id of the contact this CRM record is linked to (no lock)."""
    return session.scalar(select(Identity.contact_id).where(
        Identity.workspace_id == workspace_id, Identity.system == ref.system,
        Identity.external_id == ref.external_id))


def by_identity(session, workspace_id: str, ref: ExternalId) -> Contact | None:
    contact_id = linked_contact_id(session, workspace_id, ref)
    return lock_contact(session, contact_id) if contact_id else None


def by_email(session, workspace_id: str, email: str) -> Contact | None:
    return session.scalar(_locked(select(Contact).where(
        Contact.workspace_id == workspace_id, Contact.email == email)))


def by_phone(session, workspace_id: str, phone: str, email: str | None) -> Contact | None:
    """The one contact with this phone; never one whose different email says it is someone else."""
    ids = session.scalars(select(Contact.id).where(
        Contact.workspace_id == workspace_id,
        or_(Contact.phone == phone, Contact.mobile_phone == phone)).limit(2)).all()
    if len(ids) != 1:
        return None
    contact = lock_contact(session, ids[0])
    if contact is not None and email and contact.email and contact.email != email:
        return None
    return contact


def resolve(session, workspace_id: str, ref: ExternalId | None, email: str | None,
            phone: str | None, linked_id: str | None = None) -> Contact | None:
    """The canonical contact for this person, locked, or None for a new person.

    `linked_id`: the contact `ref` is linked to, when the caller has already looked it up."""
    if linked_id is not None:
        contact = lock_contact(session, linked_id)
        if contact is not None:
            return contact
    elif ref is not None:
        contact = by_identity(session, workspace_id, ref)
        if contact is not None:
            return contact
    if email:
        contact = by_email(session, workspace_id, email)
        if contact is not None:
            return contact
    if phone:
        return by_phone(session, workspace_id, phone, email)
    return None


def new_contact(session, workspace_id: str) -> Contact:
    contact = Contact(workspace_id=workspace_id, consent={}, custom={}, field_updated_at={}, field_sources={},
                      score_reasons=[])
    session.add(contact)
    session.flush()
    return contact


def link(session, workspace_id: str, contact: Contact, ref: ExternalId) -> bool:
    """Attach `ref` to `contact` (moving it if it named another contact). True if anything changed."""
    row = session.scalar(select(Identity).where(
        Identity.workspace_id == workspace_id, Identity.system == ref.system,
        Identity.external_id == ref.external_id))
    if row is not None:
        if row.contact_id == contact.id:
            return False
        row.contact_id = contact.id
        return True
    session.add(Identity(workspace_id=workspace_id, system=ref.system, external_id=ref.external_id,
                         object_type=ref.object_type, contact_id=contact.id))
    return True


# --- deletions (unlink) -------------------------------------------------------------------------

def tombstone(session, workspace_id: str, ref: ExternalId) -> IdentityTombstone | None:
    return session.scalar(select(IdentityTombstone).where(
        IdentityTombstone.workspace_id == workspace_id, IdentityTombstone.system == ref.system,
        IdentityTombstone.external_id == ref.external_id))


def is_late(stone: IdentityTombstone | None, at_ms: int) -> bool:
    """A change at `at_ms` was made before the record was deleted (the tombstone says when)."""
    return stone is not None and at_ms <= stone.deleted_at_ms


def revive(session, stone: IdentityTombstone | None) -> str | None:
    """A change after the deletion (a restore): drop the tombstone; returns the contact it was unlinked from."""
    if stone is None:
        return None
    contact_id = stone.contact_id
    session.delete(stone)
    return contact_id


def unlink(session, workspace_id: str, ref: ExternalId, at_ms: int) -> str | None:
    """The CRM deleted the record: remove the identity, keep the contact, leave a tombstone.

    Returns the id of the contact it was unlinked from (None when it was not linked).
    """
    row = session.scalar(select(Identity).where(
        Identity.workspace_id == workspace_id, Identity.system == ref.system,
        Identity.external_id == ref.external_id))
    contact_id = row.contact_id if row is not None else None
    if row is not None:
        session.delete(row)
    stone = tombstone(session, workspace_id, ref)
    if stone is None:
        session.add(IdentityTombstone(workspace_id=workspace_id, system=ref.system, external_id=ref.external_id,
                                      contact_id=contact_id, deleted_at_ms=at_ms))
    else:
        stone.deleted_at_ms = max(stone.deleted_at_ms, at_ms)
        stone.contact_id = contact_id or stone.contact_id
    return contact_id


# --- merges -------------------------------------------------------------------------------------

def _contact_references():
    """(table, column) pairs outside this module's own tables that point at contact.id."""
    refs = []
    for table in Base.metadata.sorted_tables:
        if table.name in MOVED_EXPLICITLY:
            continue
        for fk in table.foreign_keys:
            if fk.column.table.name == "contact" and fk.column.name == "id":
                refs.append((table, fk.parent))
    return refs


def _move_other_rows(session, loser_id: str, survivor_id: str) -> None:
    """Rows of other modules follow the survivor; one-per-contact rows that cannot move go with the loser."""
    for table, column in _contact_references():
        try:
            with session.begin_nested():
                session.execute(update(table).where(column == loser_id).values({column.name: survivor_id}))
        except IntegrityError:
            logger.info("merge: %s rows of the merged contact stay with it (unique per contact)", table.name)


def merge_contacts(session, survivor: Contact, loser: Contact) -> set[str]:
    """Fold `loser` into `survivor`: identities, activities, events and per-field newest values move;
    the loser is deleted. Returns the survivor's keys whose value changed."""
    if loser.id == survivor.id:
        return set()
    session.execute(update(Identity).where(Identity.contact_id == loser.id).values(contact_id=survivor.id))
    session.execute(update(Activity).where(Activity.contact_id == loser.id).values(contact_id=survivor.id))
    session.execute(update(Event).where(Event.contact_id == loser.id).values(contact_id=survivor.id))
    session.execute(update(IdentityTombstone).where(IdentityTombstone.contact_id == loser.id)
                    .values(contact_id=survivor.id))
    _move_other_rows(session, loser.id, survivor.id)
    if loser.created_at and survivor.created_at and loser.created_at < survivor.created_at:
        survivor.created_at = loser.created_at
    snapshot = _Snapshot(loser)
    session.delete(loser)
    session.flush()                     # the loser's email is free before the survivor may take it
    changed = merge_values(survivor, snapshot)
    logger.info("merged contact %s into %s", loser.id, survivor.id)
    return changed


class _Snapshot:
    """The loser's values, readable after its row is deleted."""

    def __init__(self, contact: Contact):
        for name in PII_FIELDS:
            setattr(self, name, getattr(contact, name))
        self.custom = dict(contact.custom or {})
        self.consent = dict(contact.consent or {})
        self.field_updated_at = dict(contact.field_updated_at or {})
        self.field_sources = dict(contact.field_sources or {})


def lock_many(session, contact_ids: set[str]) -> list[Contact]:
    """Lock contacts in id order (two merges never wait on each other in opposite orders)."""
    return [c for c in (lock_contact(session, cid) for cid in sorted(contact_ids)) if c is not None]


def contacts_of(session, workspace_id: str, refs: list[ExternalId]) -> dict[str, str]:
    """external id -> contact id, for those of `refs` that are linked."""
    found = {}
    for ref in refs:
        contact_id = session.scalar(select(Identity.contact_id).where(
            Identity.workspace_id == workspace_id, Identity.system == ref.system,
            Identity.external_id == ref.external_id))
        if contact_id:
            found[ref.external_id] = contact_id
    return found


# --- erasure ------------------------------------------------------------------------------------

def erase_contact(session, contact: Contact, keep_event_id: int | None) -> set[str]:
    """Delete a person's data: PII fields, custom attributes, consent, identities, activity properties
    and the raw payloads of the events applied to them. Returns the subjects to remember as hashes."""
    subjects = set()
    if contact.email:
        subjects.add(email_subject(contact.email))
    invalid_email = (contact.custom or {}).get("invalid_email")
    if invalid_email:
        subjects.add(email_subject(str(invalid_email).strip().lower()))
    identities = session.scalars(select(Identity).where(Identity.contact_id == contact.id)).all()
    for row in identities:
        subjects.add(identity_subject(row.system, row.external_id))
        session.delete(row)
    stones = session.scalars(select(IdentityTombstone).where(IdentityTombstone.contact_id == contact.id)).all()
    for stone in stones:
        subjects.add(identity_subject(stone.system, stone.external_id))
        session.delete(stone)
    session.execute(update(Activity).where(Activity.contact_id == contact.id).values(properties={}))
    session.execute(delete(PendingPush).where(PendingPush.contact_id == contact.id))   # nothing left to push
    scrub = update(Event).where(Event.contact_id == contact.id)
    if keep_event_id is not None:
        scrub = scrub.where(Event.id != keep_event_id)
    session.execute(scrub.values(payload={"erased": True}))     # processing.ERASED_PAYLOAD
    for name in PII_FIELDS:
        setattr(contact, name, None)
    contact.custom = {"erased_at": utcnow().isoformat()}
    contact.consent = {}
    contact.field_updated_at = {}
    contact.field_sources = {}
    contact.score_reasons = []
    return subjects


def forget_tombstones(session, workspace_id: str, ref: ExternalId) -> None:
    session.execute(delete(IdentityTombstone).where(
        IdentityTombstone.workspace_id == workspace_id, IdentityTombstone.system == ref.system,
        IdentityTombstone.external_id == ref.external_id))
