"""Owner sync: each CRM's user directory (owner id <-> email) and the owner field's translation.

The canonical `contact.owner` is the owner's email, lower-case (the rules route by it). HubSpot
keeps an owner id in `hubspot_owner_id` (its owners: GET /crm/v3/owners) and Salesforce a User Id
in `OwnerId` (its active Users); the two are matched through the user's email (DESIGN.md: "owner
⇄ OwnerId matched by the user's email").

- `OwnerDirectory`: one workspace's users in one CRM, listed once and kept in Redis for
  OWNER_DIRECTORY_TTL_SECONDS (an in-process copy stands in while Redis is down), so a batch of N
  contacts costs one listing. An id or email it does not know re-reads the listing at most once
  per directory object, and only when the kept listing is older than OWNER_DIRECTORY_REFRESH_SECONDS.
- Inbound: `prepare_events` runs before the events' transactions (no CRM call is made inside one)
  and makes sure the directory knows the owner ids the event names; `resolve_change` (in the
  transaction, after echo suppression, which works on the CRM's ids) replaces the id by the
  user's email from the kept directory. An unknown id leaves the contact's owner unchanged,
  logged and noted in sync_log ("owner.unknown", a decision; "owner.unresolved" when the directory
  could not be listed: processing never waits on a CRM). A Salesforce record owned by the
  hub's integration user was created by the hub: that is nobody's assignment and is not taken.
- crm_always: a person's owner edit in the CRM the rule does not name is not taken, and
  `restore_owner` pushes the named CRM's owner back to it (`overruled` tells when).
- Outbound: `owner_ids_for_push` maps the owner emails a push batch needs to one CRM's ids (one
  listing); `crm_owner_id` gives the push engine the id, or a note when the CRM has no such user.
- Handoff: the MQL handoff writes owners itself. `fill_owner_ids` finds the CRM user by the rep's
  email when the rep has no configured CRM id; `remember_owner_write` enters the write in the echo
  ledger and the CRM snapshot, so the push engine does not write the same owner again.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from typing import Callable, Iterable

import redis
from sqlalchemy import select

from hub import defaults
from hub.changes import ContactChange
from hub.connectors.base import CrmUser
from hub.db import transaction
from hub.exceptions import FatalError, RetriableError
from hub.logs import mask_email
from hub.mappings import fields as field_map
from hub.mappings.transforms import blank
from hub.models import Contact, Event, SyncLog
from hub.sync import connected, echo
from hub.sync.push import schedule_push

logger = logging.getLogger(__name__)

OWNER = "owner"                      # the canonical field
_LOCAL_COPIES: dict[tuple[str, str], dict] = {}      # (workspace, system) -> listing, when Redis is down


def owner_key(system: str, owner_id: str) -> str:
    """Salesforce ids compare on their case-sensitive 15-character form (15 and 18 name one user)."""
    text = str(owner_id).strip()
    return text[:15] if system == "salesforce" else text


class OwnerDirectory:
    """The users of one workspace's CRM, by id and by email; `fetch` lists them (None: cache only)."""

    def __init__(self, conn, workspace_id: str, system: str, fetch: Callable[[], list[CrmUser]] | None = None,
                 clock: Callable[[], float] = time.time):
        self.conn = conn
        self.workspace_id = workspace_id
        self.system = system
        self.fetch = fetch
        self.clock = clock
        self.refreshed = False
        self._listing: dict | None = None

    @property
    def cache_key(self) -> str:
        return f"hub:owners:{self.workspace_id}:{self.system}"

    # --- lookups -----------------------------------------------------------------------------------

    def email_for(self, owner_id: str) -> str | None:
        return self._find("ids", owner_key(self.system, owner_id))

    def id_for(self, email: str) -> str | None:
        return self._find("emails", email.strip().lower())

    def listed(self) -> bool:
        """Whether a listing is at hand (False: never listed, or the kept one expired)."""
        return self._load()["fetched_at"] > 0

    def ensure_ids(self, owner_ids: Iterable[str]) -> None:
        """Make the kept listing cover these ids if the CRM knows them (one refresh at most)."""
        listing = self._load()
        missing = [i for i in owner_ids if owner_key(self.system, i) not in listing["ids"]]
        if missing:
            self._refresh_if_stale()

    def _find(self, index: str, key: str) -> str | None:
        found = self._load()[index].get(key)
        if found is None and self._refresh_if_stale():
            found = self._listing[index].get(key)
        return found

    # --- the listing -------------------------------------------------------------------------------

    def _load(self) -> dict:
        if self._listing is None:
            self._listing = self._read_cache()
        if self._listing is None:
            if self.fetch is None:
                self._listing = _index([], 0.0, self.system)
            else:
                self._store(self._fetch())
        return self._listing

    def _refresh_if_stale(self) -> bool:
        """Re-read the CRM's users once, if a fetch is possible and the kept listing is not brand new."""
        if self.fetch is None or self.refreshed:
            return False
        if self.clock() - self._listing["fetched_at"] < defaults.OWNER_DIRECTORY_REFRESH_SECONDS:
            return False
        self._store(self._fetch())
        return True

    def _fetch(self) -> list[CrmUser]:
        """List the CRM's users; after a failed listing, no new try for OWNER_DIRECTORY_REFRESH_SECONDS."""
        self.refreshed = True
        failed = self._failed_recently()
        if failed:
            message = f"{self.system} user directory: the last listing failed; not tried again yet"
            if failed == "fatal":
                raise FatalError(message, code="DIRECTORY_UNAVAILABLE")
            raise RetriableError(message, retry_after=defaults.OWNER_DIRECTORY_REFRESH_SECONDS)
        try:
            users = self.fetch()
        except FatalError:
            self._remember_failure("fatal")
            raise
        except RetriableError:
            self._remember_failure("retriable")
            raise
        logger.info("%s user directory of workspace %s: %s users", self.system, self.workspace_id, len(users))
        return users

    def _failed_recently(self) -> str | None:
        """"fatal" or "retriable" while a failed listing's marker lasts, else None."""
        try:
            marker = self.conn.get(self.cache_key + ":failed")
        except redis.RedisError:
            return None
        return marker.decode() if isinstance(marker, bytes) else marker

    def _remember_failure(self, kind: str) -> None:
        try:
            self.conn.set(self.cache_key + ":failed", kind, ex=defaults.OWNER_DIRECTORY_REFRESH_SECONDS)
        except redis.RedisError:
            pass                            # without Redis each directory object tries once

    def _store(self, users: list[CrmUser]) -> None:
        self._listing = _index(users, self.clock(), self.system)
        document = {"fetched_at": self._listing["fetched_at"], "users": [[u.id, u.email] for u in users]}
        _LOCAL_COPIES[(self.workspace_id, self.system)] = document
        try:
            self.conn.set(self.cache_key, json.dumps(document), ex=defaults.OWNER_DIRECTORY_TTL_SECONDS)
        except redis.RedisError as exc:
            logger.warning("owner directory not cached in Redis (%s); kept in this process", type(exc).__name__)

    def _read_cache(self) -> dict | None:
        try:
            raw = self.conn.get(self.cache_key)
            document = json.loads(raw) if raw else None
        except redis.RedisError:
            document = _LOCAL_COPIES.get((self.workspace_id, self.system))
            if document and self.clock() - document["fetched_at"] > defaults.OWNER_DIRECTORY_TTL_SECONDS:
                document = None
        if not document:
            return None
        return _index([CrmUser(i, e) for i, e in document["users"]], float(document["fetched_at"]), self.system)


def _index(users: list[CrmUser], fetched_at: float, system: str) -> dict:
    """ids -> email and email -> id; a second user with the same email does not replace the first."""
    ids: dict[str, str] = {}
    emails: dict[str, str] = {}
    for user in users:
        ids[owner_key(system, user.id)] = user.email
        emails.setdefault(user.email, user.id)
    return {"fetched_at": fetched_at, "ids": ids, "emails": emails}


def directory(runtime, workspace_id: str, system: str, connector=None) -> OwnerDirectory:
    """The directory, listing through `connector` (None: the workspace's connector, built when needed)."""

    def fetch() -> list[CrmUser]:
        from hub.connectors import registry

        return (connector or registry.connector_for(runtime, workspace_id, system)).list_owners()

    return OwnerDirectory(runtime.redis(), workspace_id, system, fetch)


# --- inbound --------------------------------------------------------------------------------------

def _owner_rule(session, workspace_id: str) -> field_map.FieldRule | None:
    return connected.workspace_mapping(session, workspace_id).rule(OWNER)


def prepare_events(runtime, event_ids: list[int]) -> dict[int, list | Exception]:
    """Before the events' transactions: list a CRM's users if the events name owner ids the kept
    directory does not know. Processing never waits on a CRM: when the listing fails, it is logged
    and the owner stays unresolved (`resolve_change` notes it, and the next message offers it again).

    Returns the CRM events' changes as their handlers read them (or the error a handler raised), so
    processing does not read them again."""
    from hub.sync.processing import read_changes

    if not event_ids:
        return {}
    with transaction(runtime.engine) as session:
        rows = session.execute(select(Event.id, Event.source, Event.kind, Event.payload, Event.workspace_id).where(
            Event.id.in_(event_ids), Event.status == "pending", Event.source.in_(field_map.SYSTEMS))).all()
    parsed: dict[int, list | Exception] = {}
    named: dict[tuple[str, str], set[str]] = {}         # (workspace, system) -> owner ids
    for row in rows:
        try:
            parsed[row.id] = changes = read_changes(row.source, row.kind, row.payload)
        except Exception as exc:  # noqa: BLE001 - unreadable or a handler bug: processing records it
            parsed[row.id] = exc
            continue
        named.setdefault((row.workspace_id, row.source), set()).update(
            str(c.fields[OWNER]) for c in changes or () if c.system == row.source and not blank(c.fields.get(OWNER)))
    for (workspace_id, system), owner_ids in named.items():
        if owner_ids:
            _ensure_owner_ids(runtime, workspace_id, system, owner_ids)
    return parsed


def _ensure_owner_ids(runtime, workspace_id: str, system: str, owner_ids: set[str]) -> None:
    with transaction(runtime.engine) as session:
        rule = _owner_rule(session, workspace_id)
    owner_ids = {i for i in owner_ids if rule is not None and field_map.inbound_allowed(rule, system, i)}
    if not owner_ids:
        return
    try:
        directory(runtime, workspace_id, system).ensure_ids(owner_ids)
    except (RetriableError, FatalError) as exc:
        logger.warning("%s user directory unavailable (%s): owners stay unresolved", system, exc)


def overruled(session, workspace_id: str, before: ContactChange, after: ContactChange) -> bool:
    """A person changed the owner in a CRM that may not set it (crm_always names the other CRM)."""
    if OWNER not in before.fields or OWNER in after.fields or blank(before.fields[OWNER]):
        return False
    rule = _owner_rule(session, workspace_id)
    if rule is None or rule.direction != "crm_always" or rule.crm == before.system:
        return False
    return not echo.written_by_hub(before, connected.settings_of(session, workspace_id, before.system))


def restore_owner(session, workspace_id: str, contact_id: str) -> None:
    """The named CRM always wins: push the contact's owner back to the CRM a person overruled it in
    (the push engine writes only where the CRM's value differs). No known owner: nothing to restore."""
    contact = session.get(Contact, contact_id)
    if contact is not None and not blank(contact.owner):
        schedule_push(session, workspace_id, contact_id, {OWNER}, "hub")


def resolve_change(session, runtime, workspace_id: str, change: ContactChange) -> ContactChange:
    """The change with its CRM owner id replaced by the user's email (from the kept directory only).

    Unknown ids and the integration user's own records leave the owner out of the change.
    """
    if change.system not in field_map.SYSTEMS or OWNER not in change.fields or blank(change.fields[OWNER]):
        return change
    owner_id = str(change.fields[OWNER]).strip()
    fields = dict(change.fields)
    if change.system == "salesforce" and _is_integration_user(session, workspace_id, owner_id):
        fields.pop(OWNER)
        logger.debug("salesforce %s is owned by the integration user: no owner taken", change.external_id)
        return _replace_fields(change, fields)
    users = OwnerDirectory(runtime.redis(), workspace_id, change.system)
    email = users.email_for(owner_id)
    if email is None:
        fields.pop(OWNER)
        _note_unresolved(session, workspace_id, change, owner_id, listed=users.listed())
        return _replace_fields(change, fields)
    fields[OWNER] = email
    return _replace_fields(change, fields)


def _replace_fields(change: ContactChange, fields: dict) -> ContactChange:
    times = {k: v for k, v in change.field_times.items() if k in fields or k not in change.fields}
    return replace(change, fields=fields, field_times=times)


def _is_integration_user(session, workspace_id: str, owner_id: str) -> bool:
    user = connected.settings_of(session, workspace_id, "salesforce").get("integration_user_id")
    return bool(user) and owner_key("salesforce", user) == owner_key("salesforce", owner_id)


def _note_unresolved(session, workspace_id: str, change: ContactChange, owner_id: str, listed: bool) -> None:
    """Log and note an owner id left unresolved, and forget it in the record's snapshot: the record's
    next message (Salesforce sends whole records) offers it again instead of looking unchanged, so a
    user added to the CRM after the last listing is found by a later refresh."""
    reason = "is no known user with an email" if listed else "could not be looked up (user directory unavailable)"
    detail = f"{change.system} owner {owner_id} {reason}: the contact's owner is left unchanged"
    logger.warning("%s record %s: %s", change.system, change.external_id, detail)
    session.add(SyncLog(workspace_id=workspace_id, target=change.system,
                        operation="owner.unknown" if listed else "owner.unresolved",
                        object_ids=[i for i in (change.external_id, owner_id) if i], status="decision",
                        error=detail))
    if change.external_id:
        echo.forget_values(session, workspace_id, change.system, change.external_id, {OWNER})


# --- outbound -------------------------------------------------------------------------------------

def owner_ids_for_push(runtime, workspace_id: str, system: str, connector,
                       emails: set[str]) -> dict[str, str] | None:
    """email -> the CRM's owner id, for the emails this CRM knows (one listing for the whole batch).

    None when the CRM refuses the listing (FatalError, e.g. a missing scope: logged); a
    RetriableError goes up so the pushes wait.
    """
    wanted = sorted({e.strip().lower() for e in emails if not blank(e)})
    if not wanted:
        return {}
    users = directory(runtime, workspace_id, system, connector)
    try:
        found = {email: users.id_for(email) for email in wanted}
    except FatalError as exc:
        logger.warning("%s user directory unavailable (%s): owners are not written", system, exc.code)
        return None
    return {email: owner_id for email, owner_id in found.items() if owner_id}


def crm_owner_id(system: str, email, owner_ids: dict[str, str] | None) -> tuple[str | None, str | None]:
    """(the owner id to write, or None) and (why nothing is written, or None)."""
    if blank(email):
        # HubSpot clears the owner; a Salesforce record always has one (OwnerId is required).
        return ("", None) if system == "hubspot" else (None, None)
    if owner_ids is None:
        return None, f"the {system} user directory is unavailable: owner not written"
    owner_id = owner_ids.get(str(email).strip().lower())
    if owner_id is None:
        return None, f"no {system} user with the email {mask_email(str(email))}: owner not written"
    return owner_id, None


def fill_owner_ids(runtime, workspace_id: str, owner_email: str | None, crm_owner_ids: dict[str, str | None],
                   connectors: dict) -> None:
    """The handoff's rep has no configured id in a CRM: use the CRM user with the rep's email, if any."""
    for system, connector in connectors.items():
        if crm_owner_ids.get(system) or blank(owner_email) or system not in field_map.SYSTEMS:
            continue
        found = owner_ids_for_push(runtime, workspace_id, system, connector, {owner_email}) or {}
        crm_owner_ids[system] = found.get(owner_email.strip().lower())


def remember_owner_write(runtime, workspace_id: str, system: str, contact_id: str, object_id: str,
                         owner_id: str) -> None:
    """An owner the handoff wrote: into the echo ledger and the CRM snapshot (as the push engine does)."""
    with transaction(runtime.engine) as session:
        mapping = connected.workspace_mapping(session, workspace_id)
        echo.record_writes(session, workspace_id, system, contact_id, object_id, {OWNER: owner_id}, mapping)
        echo.remember_values(session, workspace_id, system, object_id, {OWNER: owner_id})
