"""HubSpot events through the whole pipeline (signed post -> outbox -> worker) into canonical contacts."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from hub.db import transaction
from hub.models import Contact, Erasure, Event, Identity, SyncLog
from hub.sync import identity as identity_mod
from tests.conftest import run_pipeline
from tests.processing_helpers import (
    contact_of,
    contacts,
    count,
    deliver,
    deliver_and_run,
    events,
    hubspot_items,
    identities,
    process_now,
    snapshot,
)

JANE = 1246965          # objectIds used by the vendor-sample fixtures
JOHN = 1246978
MERGED_NEW = 1247001


def ws(workspace) -> str:
    return workspace["workspace_id"]


def profile(client, runtime, object_id=JANE, **overrides) -> None:
    """Jane's profile properties (fixture contact.propertyChange__profile.json) for `object_id`."""
    items = hubspot_items("contact.propertyChange__profile", objectId=object_id, **overrides)
    if object_id != JANE:
        for item in items:
            item["eventId"] += object_id
    deliver_and_run(client, runtime, items)


def property_change(object_id, prop, value, occurred_at, event_id=1946140000, **extra) -> dict:
    return hubspot_items("contact.propertyChange__sample", index=0, objectId=object_id, propertyName=prop,
                         propertyValue=value, occurredAt=occurred_at, eventId=event_id, **extra)[0]


# --- creation and property changes ----------------------------------------------------------------

def test_creation_makes_a_contact_shell_with_its_identity(client, runtime, hubspot_connection, workspace):
    deliver_and_run(client, runtime, hubspot_items("contact.creation__sample"))
    found = contacts(runtime, ws(workspace))
    assert len(found) == 2
    jane = contact_of(runtime, ws(workspace), "hubspot", JANE)
    assert jane is not None and jane.email is None
    assert identities(runtime, jane.id) == {("hubspot", str(JANE))}
    assert {e.status for e in events(runtime)} == {"processed"}


def test_property_changes_fill_normalised_fields(client, runtime, hubspot_connection, workspace):
    deliver_and_run(client, runtime, hubspot_items("contact.creation__sample", index=0))
    profile(client, runtime)
    jane = contact_of(runtime, ws(workspace), "hubspot", JANE)
    assert (jane.first_name, jane.last_name, jane.email) == ("Jane Mary", "Doe", "jane.doe@example.com")
    assert (jane.country, jane.phone, jane.mobile_phone) == ("DE", "+4930901820", "+4915123456789")
    assert (jane.company, jane.title, jane.company_size, jane.lifecycle_stage) == (
        "Acme GmbH", "Head of Marketing", 25, "lead")
    assert jane.custom == {"hs_lead_status": "NEW"}
    assert jane.owner is None        # the owner is Salesforce's (crm_always): HubSpot's owner id does not set it
    assert jane.field_updated_at["first_name"] == 1764093870000       # the property's occurredAt
    assert jane.field_updated_at["custom.hs_lead_status"] == 1764093870100
    assert len(contacts(runtime, ws(workspace))) == 1


def test_property_change_before_creation_event_still_yields_one_contact(client, runtime, hubspot_connection, workspace):
    profile(client, runtime)
    deliver_and_run(client, runtime, hubspot_items("contact.creation__sample", index=0))
    assert len(contacts(runtime, ws(workspace))) == 1
    assert contact_of(runtime, ws(workspace), "hubspot", JANE).email == "jane.doe@example.com"


@pytest.mark.parametrize("first, second, expected", [
    # (occurredAt, value) delivered first, then second; the newer change wins whatever the order
    ((2000, "Newer"), (1000, "Older"), "Newer"),
    ((1000, "Older"), (2000, "Newer"), "Newer"),
    ((2000, "Newer"), (2000, "Newer"), "Newer"),
])
def test_out_of_order_property_changes_keep_the_newer_value(client, runtime, hubspot_connection, workspace,
                                                            first, second, expected):
    base = 1764093900000
    deliver_and_run(client, runtime, [property_change(JANE, "lastname", first[1], base + first[0], 1)])
    deliver_and_run(client, runtime, [property_change(JANE, "lastname", second[1], base + second[0], 2)])
    jane = contact_of(runtime, ws(workspace), "hubspot", JANE)
    assert jane.last_name == expected
    assert jane.field_updated_at["last_name"] == base + 2000


def test_equal_timestamps_are_broken_by_the_later_event_whatever_the_processing_order(
        client, runtime, hubspot_connection, workspace):
    at = 1764093900000
    deliver(client, [property_change(JANE, "firstname", "Janet", at, 11)])
    deliver(client, [property_change(JANE, "firstname", "Jane", at, 12)])
    first_id, second_id = [e.id for e in events(runtime)]
    assert process_now(runtime, second_id) == "processed"
    assert process_now(runtime, first_id) == "processed"
    assert contact_of(runtime, ws(workspace), "hubspot", JANE).first_name == "Jane"


def test_a_cleared_property_clears_the_field_but_never_the_email(client, runtime, hubspot_connection, workspace):
    profile(client, runtime)
    deliver_and_run(client, runtime, [property_change(JANE, "jobtitle", "", 1764093990000, 21),
                                      property_change(JANE, "email", "", 1764093990000, 22)])
    jane = contact_of(runtime, ws(workspace), "hubspot", JANE)
    assert jane.title is None and jane.email == "jane.doe@example.com"


def test_invalid_values_are_kept_aside_and_the_event_still_processes(client, runtime, hubspot_connection, workspace):
    deliver_and_run(client, runtime, [property_change(JANE, "email", "jane doe@example", 1764093990000, 31),
                                      property_change(JANE, "country", "Atlantis", 1764093990000, 32),
                                      property_change(JANE, "phone", "12", 1764093990000, 33)])
    jane = contact_of(runtime, ws(workspace), "hubspot", JANE)
    assert (jane.email, jane.country, jane.phone) == (None, None, None)
    assert jane.custom == {"invalid_email": "jane doe@example", "invalid_country": "Atlantis", "invalid_phone": "12"}
    assert {e.status for e in events(runtime)} == {"processed"}


def test_email_optout_becomes_consent(client, runtime, hubspot_connection, workspace):
    deliver_and_run(client, runtime, [property_change(JANE, "hs_email_optout", "true", 1764093990000, 41)])
    consent = contact_of(runtime, ws(workspace), "hubspot", JANE).consent
    assert consent == {"email": {"granted": False, "source": "hubspot", "at": "2025-11-25T18:06:30+00:00"}}


def test_redelivery_and_replay_change_nothing(client, runtime, hubspot_connection, workspace):
    from hub.sync import replay

    batch = hubspot_items("contact.creation__sample") + hubspot_items("contact.propertyChange__profile")
    deliver_and_run(client, runtime, batch)
    before = snapshot(runtime, ws(workspace))
    for item in batch:
        item["attemptNumber"] += 1
    assert deliver_and_run(client, runtime, batch) == {"accepted": 0, "duplicates": len(batch)}
    for event in events(runtime):
        assert replay.replay_event(runtime, event.id)
    run_pipeline(runtime)
    assert snapshot(runtime, ws(workspace)) == before
    assert {e.status for e in events(runtime)} == {"processed"}


# --- merges ---------------------------------------------------------------------------------------

def test_merge_with_a_new_object_id_leaves_one_contact_with_every_identity(client, runtime, hubspot_connection,
                                                                          workspace):
    profile(client, runtime, JANE)
    deliver_and_run(client, runtime, [property_change(JOHN, "email", "john@example.com", 1764093860000, 51),
                                      property_change(JOHN, "lastname", "Doe-Smith", 1764093940000, 52),
                                      property_change(JOHN, "city", "Berlin", 1764093880000, 53)])
    jane_id = contact_of(runtime, ws(workspace), "hubspot", JANE).id
    assert len(contacts(runtime, ws(workspace))) == 2

    deliver_and_run(client, runtime, hubspot_items("contact.merge__sample"))

    [merged] = contacts(runtime, ws(workspace))
    assert merged.id == jane_id                               # the primary record's contact survives
    assert identities(runtime, merged.id) == {("hubspot", str(JANE)), ("hubspot", str(JOHN)),
                                              ("hubspot", str(MERGED_NEW))}
    assert merged.last_name == "Doe-Smith"                    # John's value is newer
    assert merged.email == "jane.doe@example.com"             # Jane's is newer
    assert merged.city == "Berlin"                            # only John had it
    assert merged.first_name == "Jane Mary"


def test_merge_of_unknown_records_creates_one_contact(client, runtime, hubspot_connection, workspace):
    deliver_and_run(client, runtime, hubspot_items("contact.merge__sample"))
    [merged] = contacts(runtime, ws(workspace))
    assert identities(runtime, merged.id) == {("hubspot", str(JANE)), ("hubspot", str(JOHN)),
                                              ("hubspot", str(MERGED_NEW))}


def test_merge_folds_three_contacts_and_later_events_for_any_id_reach_the_survivor(
        client, runtime, hubspot_connection, workspace):
    for offset, object_id in enumerate((JANE, JOHN, MERGED_NEW)):
        deliver_and_run(client, runtime, [property_change(object_id, "website", f"https://{object_id}.example.com",
                                                          1764093800000 + offset, 60 + offset)])
    assert len(contacts(runtime, ws(workspace))) == 3
    deliver_and_run(client, runtime, hubspot_items("contact.merge__sample"))
    [merged] = contacts(runtime, ws(workspace))
    assert merged.website == f"https://{MERGED_NEW}.example.com"    # the newest of the three
    deliver_and_run(client, runtime, [property_change(JOHN, "city", "Hamburg", 1764094100000, 70)])
    [after] = contacts(runtime, ws(workspace))
    assert after.id == merged.id and after.city == "Hamburg"


def test_an_email_held_by_another_crm_contact_is_a_logged_conflict_not_a_merge(client, runtime, hubspot_connection,
                                                                                workspace):
    profile(client, runtime, JANE)
    deliver_and_run(client, runtime, [property_change(JOHN, "firstname", "J.", 1764093800000, 81),
                                      property_change(JOHN, "email", "JANE.DOE@example.com", 1764093990000, 82)])
    jane, john = contact_of(runtime, ws(workspace), "hubspot", JANE), contact_of(runtime, ws(workspace), "hubspot", JOHN)
    assert jane.id != john.id                 # two HubSpot records: two people until HubSpot merges them
    assert (jane.email, john.email, john.first_name) == ("jane.doe@example.com", None, "J.")
    with transaction(runtime.engine) as session:
        [decision] = session.scalars(select(SyncLog).where(SyncLog.status == "decision")).all()
    assert decision.operation == "email.conflict" and decision.object_ids == [str(JOHN), john.id, jane.id]


# --- deletions ------------------------------------------------------------------------------------

def test_deletion_unlinks_the_identity_and_keeps_the_contact(client, runtime, hubspot_connection, workspace):
    profile(client, runtime, JOHN)
    john_id = contact_of(runtime, ws(workspace), "hubspot", JOHN).id
    deliver_and_run(client, runtime, hubspot_items("contact.deletion__sample"))
    assert contact_of(runtime, ws(workspace), "hubspot", JOHN) is None
    [kept] = contacts(runtime, ws(workspace))
    assert kept.id == john_id and kept.email == "jane.doe@example.com"

    # a late change made before the deletion does not bring the record back
    late = property_change(JOHN, "city", "Munich", 1764093900000, 91)
    deliver_and_run(client, runtime, [late])
    assert contact_of(runtime, ws(workspace), "hubspot", JOHN) is None
    assert "deleted_identity" in events(runtime)[-1].last_error
    assert events(runtime)[-1].status == "ignored"

    # a restore after the deletion links the record to the same contact again
    restore = hubspot_items("contact.creation__sample", index=1, subscriptionType="contact.restore",
                            occurredAt=1764094200000, eventId=92)
    deliver_and_run(client, runtime, restore)
    assert contact_of(runtime, ws(workspace), "hubspot", JOHN).id == john_id


def test_privacy_deletion_erases_and_late_events_do_not_recreate_the_person(client, runtime, hubspot_connection,
                                                                             workspace):
    from hub.sync import replay

    profile(client, runtime, JANE)
    deliver_and_run(client, runtime, hubspot_items("contact.merge__sample"))     # Jane is now also 1247001
    jane_id = contact_of(runtime, ws(workspace), "hubspot", MERGED_NEW).id

    deliver_and_run(client, runtime, hubspot_items("contact.privacyDeletion__sample"))

    with transaction(runtime.engine) as session:
        erased = session.get(Contact, jane_id)
        assert (erased.email, erased.first_name, erased.phone, erased.company) == (None, None, None, None)
        assert set(erased.custom) == {"erased_at"} and erased.consent == {} and erased.field_updated_at == {}
        assert session.scalars(select(Identity)).all() == []
        hashes = set(session.scalars(select(Erasure.subject_hash)))
        payloads = [e.payload for e in session.scalars(select(Event).where(Event.contact_id == jane_id))]
    wid = ws(workspace)
    assert identity_mod.subject_hash(wid, "email:jane.doe@example.com") in hashes
    assert identity_mod.subject_hash(wid, f"hubspot:{JANE}") in hashes
    assert identity_mod.subject_hash(wid, f"hubspot:{MERGED_NEW}") in hashes
    assert not any("jane" in str(h) for h in hashes)
    assert all("Jane" not in str(p) and "jane" not in str(p) for p in payloads)

    late = [property_change(MERGED_NEW, "firstname", "Jane", 1764093999000, 101),
            property_change(4242, "email", "Jane.Doe@example.com", 1764093999000, 102)]
    deliver_and_run(client, runtime, late)
    assert contact_of(runtime, wid, "hubspot", MERGED_NEW) is None
    assert contact_of(runtime, wid, "hubspot", 4242) is None
    assert [c.id for c in contacts(runtime, wid)] == [jane_id]
    assert [e.status for e in events(runtime)[-2:]] == ["ignored", "ignored"]
    assert all("erased_subject" in e.last_error for e in events(runtime)[-2:])
    assert [e.payload for e in events(runtime)[-2:]] == [{"erased": True}] * 2     # nothing personal is kept
    replay.replay_event(runtime, events(runtime)[-1].id)
    run_pipeline(runtime)
    assert events(runtime)[-1].status == "ignored" and "erased_payload" in events(runtime)[-1].last_error


def test_privacy_deletion_of_an_unknown_record_still_blocks_its_late_events(client, runtime, hubspot_connection,
                                                                            workspace):
    deliver_and_run(client, runtime, hubspot_items("contact.privacyDeletion__sample"))
    assert events(runtime)[-1].status == "processed"
    deliver_and_run(client, runtime, [property_change(MERGED_NEW, "lastname", "Doe", 1764093000000, 111)])
    assert contacts(runtime, ws(workspace)) == []
    assert count(runtime, Erasure) == 1


# --- events the hub does not act on ---------------------------------------------------------------

def test_unknown_kind_is_stored_and_ignored_with_a_reason(client, runtime, hubspot_connection, workspace):
    item = hubspot_items("contact.creation__sample", index=0, subscriptionType="contact.somethingNew")
    deliver_and_run(client, runtime, item)
    [event] = events(runtime)
    assert event.status == "ignored" and "unknown_kind" in event.last_error
    assert event.payload["subscriptionType"] == "contact.somethingNew"
    assert contacts(runtime, ws(workspace)) == []


def test_association_changes_keep_the_primary_company_and_ignore_the_rest(client, runtime, hubspot_connection,
                                                                          workspace):
    deliver_and_run(client, runtime, hubspot_items("contact.associationChange__sample"))
    added, removed = events(runtime)
    assert added.status == "processed"
    assert removed.status == "ignored" and "non_primary_association" in removed.last_error
    assert contact_of(runtime, ws(workspace), "hubspot", JANE).custom == {"hubspot_company_id": "9876501"}
