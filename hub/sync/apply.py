"""Applying values to a canonical contact with per-field vendor timestamps.

Every value carries the vendor's change time (epoch ms) and the id of the event that brought it.
`Contact.field_updated_at[key]` holds the time of the value the contact has; `field_sources[key]`
holds the system and event behind it. A value is taken only when its (time, event id) is newer
than the stored one: an older event never overwrites a newer value, and equal times are broken
deterministically (the later event wins). Keys are canonical field names, `custom.<name>` for
custom attributes and `consent.<channel>` for consent flags.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from hub.changes import CONTACT_FIELDS, ContactChange
from hub.exceptions import InvalidValueError
from hub.logs import mask
from hub.mappings import transforms
from hub.models import Contact

logger = logging.getLogger(__name__)

CRM_SYSTEMS = frozenset({"hubspot", "salesforce"})
CUSTOM = "custom."
CONSENT = "consent."
INVALID_VALUE_MAX_LENGTH = 255
# Fields a blank edit never clears (identity keys; DESIGN: email is `most_recent`).
NEVER_CLEARED = frozenset({"email"})


@dataclass
class Stamp:
    """When a value changed at its source, and which event brought it (tie-break)."""

    at_ms: int
    event_id: int = 0
    system: str | None = None

    def key(self) -> tuple[int, int]:
        return (self.at_ms, self.event_id)


@dataclass
class Values:
    """A change's values after normalisation, keyed as in `field_updated_at`."""

    fields: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)
    consent: dict[str, bool] = field(default_factory=dict)
    raw_phones: dict[str, Any] = field(default_factory=dict)   # normalised once the region is known


def column_length(name: str) -> int | None:
    return getattr(Contact.__table__.c[name].type, "length", None)


def _invalid(values: Values, name: str, raw: Any, exc: InvalidValueError) -> None:
    kept, _ = transforms.limit_length(str(raw).strip(), INVALID_VALUE_MAX_LENGTH)
    values.custom[f"invalid_{name}"] = kept
    logger.warning("invalid %s kept in custom attributes (%s): %s", name, exc.reason, mask(str(kept)))


def _limited(name: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    limited, truncated = transforms.limit_length(value, column_length(name))
    if truncated:
        logger.info("%s cut to %s characters", name, column_length(name))
    return limited


def normalise(change: ContactChange) -> Values:
    """Canonical values of `change`; a value that cannot be made canonical goes to custom["invalid_<field>"].

    Blank values clear a field only when a CRM sends them (a form that leaves a field empty
    clears nothing), and never clear the email.
    """
    values = Values(custom=dict(change.custom), consent=dict(change.consent))
    clears = change.system in CRM_SYSTEMS
    for name, raw in change.fields.items():
        if name not in CONTACT_FIELDS:
            values.custom[name] = raw
            continue
        if transforms.blank(raw):
            if clears and name not in NEVER_CLEARED:
                values.fields[name] = None
            continue
        if name in transforms.PHONE_FIELDS:
            values.raw_phones[name] = raw
            continue
        try:
            values.fields[name] = _limited(name, transforms.canonical(name, raw))
        except InvalidValueError as exc:
            _invalid(values, name, raw, exc)
    return values


def normalise_phones(values: Values, region: str | None) -> None:
    """E.164 for the change's phone numbers, read in `region` when they have no `+` prefix."""
    for name, raw in values.raw_phones.items():
        try:
            values.fields[name] = transforms.phone(raw, region)
        except InvalidValueError as exc:
            _invalid(values, name, raw, exc)
    values.raw_phones = {}


def phone_candidate(values: Values) -> str | None:
    """The change's phone in E.164, for identity resolution, when it can be read without a contact."""
    region = values.fields.get("country")
    for name in ("phone", "mobile_phone"):
        raw = values.raw_phones.get(name)
        if raw is None:
            continue
        try:
            return transforms.phone(raw, region)
        except InvalidValueError:
            continue
    return None


def stored_stamp(contact: Contact, key: str) -> Stamp | None:
    at_ms = (contact.field_updated_at or {}).get(key)
    if at_ms is None:
        return None
    source = (contact.field_sources or {}).get(key) or {}
    return Stamp(int(at_ms), int(source.get("event") or 0), source.get("system"))


def is_newer(stamp: Stamp, current: Stamp | None) -> bool:
    return current is None or stamp.key() > current.key()


def current_value(contact: Contact, key: str) -> Any:
    if key.startswith(CUSTOM):
        return (contact.custom or {}).get(key[len(CUSTOM):])
    if key.startswith(CONSENT):
        return (contact.consent or {}).get(key[len(CONSENT):])
    return getattr(contact, key)


class ContactWriter:
    """Collects writes to one contact and assigns fresh JSON objects once (plain JSON columns)."""

    def __init__(self, contact: Contact):
        self.contact = contact
        self.custom = dict(contact.custom or {})
        self.consent = dict(contact.consent or {})
        self.times = dict(contact.field_updated_at or {})
        self.sources = dict(contact.field_sources or {})
        self.changed: set[str] = set()

    def offer(self, key: str, value: Any, stamp: Stamp) -> bool:
        """Take `value` for `key` when `stamp` is newer than the stored one. True if the value changed."""
        current = None if key not in self.times else Stamp(
            int(self.times[key]), int((self.sources.get(key) or {}).get("event") or 0))
        if not is_newer(stamp, current):
            return False
        self.times[key] = stamp.at_ms
        self.sources[key] = {"system": stamp.system, "event": stamp.event_id}
        if self._get(key) == value:
            return False
        self._set(key, value)
        self.changed.add(key)
        return True

    def _get(self, key: str) -> Any:
        if key.startswith(CUSTOM):
            return self.custom.get(key[len(CUSTOM):])
        if key.startswith(CONSENT):
            return self.consent.get(key[len(CONSENT):])
        return getattr(self.contact, key)

    def _set(self, key: str, value: Any) -> None:
        if key.startswith(CUSTOM):
            name = key[len(CUSTOM):]
            if value is None:
                self.custom.pop(name, None)
            else:
                self.custom[name] = value
        elif key.startswith(CONSENT):
            self.consent[key[len(CONSENT):]] = value
        else:
            setattr(self.contact, key, value)

    def finish(self) -> set[str]:
        """Write the JSON columns back (new objects, so SQLAlchemy sees the change)."""
        self.contact.custom = self.custom
        self.contact.consent = self.consent
        self.contact.field_updated_at = self.times
        self.contact.field_sources = self.sources
        return self.changed


def consent_entry(granted: bool, source: str, at_ms: int) -> dict:
    at = datetime.fromtimestamp(at_ms / 1000, tz=timezone.utc).isoformat()
    return {"granted": bool(granted), "source": source, "at": at}


def field_stamp(stamp: Stamp, field_times: dict[str, datetime], name: str) -> Stamp:
    """The change's own time for `name` when the vendor gave one per field (ContactChange.field_times)."""
    at = field_times.get(name)
    if at is None:
        return stamp
    return Stamp(transforms.epoch_ms(at), stamp.event_id, stamp.system)


def apply_values(contact: Contact, values: Values, stamp: Stamp, consent_source: str,
                 field_times: dict[str, datetime] | None = None) -> set[str]:
    """Offer every value of a change to `contact`; returns the keys whose value changed."""
    times = field_times or {}
    writer = ContactWriter(contact)
    for name, value in values.fields.items():
        writer.offer(name, value, field_stamp(stamp, times, name))
    for name, value in values.custom.items():
        writer.offer(CUSTOM + name, value, field_stamp(stamp, times, name))
    for channel, granted in values.consent.items():
        if granted is None:
            continue
        key = CONSENT + channel
        at = field_stamp(stamp, times, key)
        current = writer.consent.get(channel) or {}
        if current.get("granted") == bool(granted) and current.get("source") == consent_source:
            writer.offer(key, current, at)     # the same decision again: keep its first time
            continue
        writer.offer(key, consent_entry(granted, consent_source, at.at_ms), at)
    return writer.finish()


def merge_values(survivor: Contact, loser: Contact) -> set[str]:
    """Per key, keep the newer of the two values (by field_updated_at); fill what the survivor lacks."""
    writer = ContactWriter(survivor)
    keys = set(CONTACT_FIELDS) | {CUSTOM + k for k in (loser.custom or {})} | {
        CONSENT + k for k in (loser.consent or {})} | set(loser.field_updated_at or {})
    for key in sorted(keys):
        value = current_value(loser, key)
        theirs = stored_stamp(loser, key)
        ours = stored_stamp(survivor, key)
        if theirs is not None and is_newer(theirs, ours):
            writer.offer(key, value, theirs)
        elif value is not None and writer._get(key) is None and ours is None:
            writer._set(key, value)
            writer.changed.add(key)
    return writer.finish()
