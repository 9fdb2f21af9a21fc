"""Per-field application rules, as tables: vendor times, tie-breaks, blanks, invalid values, merges."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from hub.changes import ContactChange
from hub.models import Contact
from hub.sync.apply import Stamp, apply_values, merge_values, normalise, normalise_phones

T0 = 1764093900000


def contact(**values) -> Contact:
    base = dict(custom={}, consent={}, field_updated_at={}, field_sources={})
    return Contact(**{**base, **values})


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def apply(target: Contact, change: ContactChange, event_id: int) -> set[str]:
    values = normalise(change)
    normalise_phones(values, values.fields.get("country") or target.country)
    stamp = Stamp(int(change.changed_at.timestamp() * 1000), event_id, change.system)
    return apply_values(target, values, stamp, change.system, change.field_times)


# (stored value, stored ms, stored event) , (incoming value, incoming ms, incoming event) -> expected value
@pytest.mark.parametrize("stored, incoming, expected", [
    (("Old", T0, 5), ("New", T0 + 1, 1), "New"),        # newer time wins, whatever the event id
    (("New", T0 + 1, 1), ("Old", T0, 9), "New"),        # an older change never overwrites
    (("A", T0, 5), ("B", T0, 6), "B"),                  # equal times: the later event wins
    (("B", T0, 6), ("A", T0, 5), "B"),                  # ... in either order
    ((None, None, None), ("First", T0, 1), "First"),    # nothing stored yet
])
def test_per_field_times_decide(stored, incoming, expected):
    value, ms, event = stored
    target = contact(last_name=value)
    if ms is not None:
        target.field_updated_at = {"last_name": ms}
        target.field_sources = {"last_name": {"system": "hubspot", "event": event}}
    apply(target, ContactChange(system="hubspot", fields={"last_name": incoming[0]}, changed_at=at(incoming[1])),
          incoming[2])
    assert target.last_name == expected
    assert target.field_updated_at["last_name"] == max(ms or 0, incoming[1])


def test_field_times_override_the_change_time_per_field():
    target = contact(city="Berlin", company="Old Co", field_updated_at={"city": T0 + 50, "company": T0 + 50})
    change = ContactChange(system="salesforce", fields={"city": "Munich", "company": "New Co"}, changed_at=at(T0 + 100),
                           field_times={"city": at(T0 + 10)})
    assert apply(target, change, 7) == {"company"}
    assert (target.city, target.company) == ("Berlin", "New Co")


@pytest.mark.parametrize("system, field, cleared", [
    ("hubspot", "title", True),          # a CRM clearing a property clears it
    ("salesforce", "city", True),
    ("hubspot", "email", False),         # the identity key is never cleared by a blank
    ("form", "title", False),            # a form leaving a field empty clears nothing
    ("shop", "city", False),
])
def test_blank_values(system, field, cleared):
    target = contact(**{field: "x@example.com" if field == "email" else "Kept"})
    apply(target, ContactChange(system=system, fields={field: "  "}, changed_at=at(T0)), 1)
    assert (getattr(target, field) is None) == cleared


def test_values_are_normalised_and_bad_ones_kept_aside():
    target = contact(country="GB")
    change = ContactChange(system="form", changed_at=at(T0), fields={
        "email": "not-an-email", "phone": "020 7946 0958", "first_name": "  Ada   Lovelace ",
        "company": "x" * 300, "favourite_colour": "green"}, consent={"email": True})
    changed = apply(target, change, 3)
    assert target.email is None and target.custom["invalid_email"] == "not-an-email"
    assert target.phone == "+442079460958"                 # read in the contact's country
    assert target.first_name == "Ada Lovelace" and len(target.company) == 255
    assert target.custom["favourite_colour"] == "green"
    assert target.consent == {"email": {"granted": True, "source": "form", "at": "2025-11-25T18:05:00+00:00"}}
    assert {"phone", "first_name", "company", "custom.invalid_email", "custom.favourite_colour",
            "consent.email"} <= changed


def test_merge_keeps_the_newer_value_per_field_and_fills_gaps():
    survivor = contact(first_name="Jane", last_name="Doe", field_updated_at={"first_name": T0 + 10, "last_name": T0},
                       field_sources={}, custom={"a": 1}, consent={})
    loser = contact(first_name="Janet", last_name="Smith", city="Berlin", custom={"b": 2},
                    field_updated_at={"first_name": T0, "last_name": T0 + 10, "city": T0, "custom.b": T0})
    changed = merge_values(survivor, loser)
    assert (survivor.first_name, survivor.last_name, survivor.city) == ("Jane", "Smith", "Berlin")
    assert survivor.custom == {"a": 1, "b": 2}
    assert survivor.field_updated_at["last_name"] == T0 + 10
    assert changed == {"last_name", "city", "custom.b"}
