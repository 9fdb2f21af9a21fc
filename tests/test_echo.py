"""Echo ledger: the hub's own writes coming back are recognised field by field, never whole notifications."""
from __future__ import annotations

from datetime import timedelta

import pytest

from hub import admin
from hub.changes import ContactChange
from hub.db import transaction
from hub.mappings import fields as fm
from hub.models import Contact, Identity, utcnow
from hub.sync import echo
from tests.conftest import HUBSPOT_APP_ID

SF_USER = "0055g00000INTEGRAT"   # 18-character Salesforce user id of the integration user
PERSON = "0055g00000PERSONAL"
LEAD_ID = "00Q5g00000Lq1aBEAR"
MAPPING = fm.load_mapping({})


@pytest.fixture
def linked(runtime, workspace, hubspot_connection):
    ws = workspace["workspace_id"]
    admin.connect(runtime, ws, "salesforce", "00D5g000004ABCDEA2", {"access_token": "t"},
                  {"instance_url": "http://127.0.0.1:1", "integration_user_id": SF_USER})
    with transaction(runtime.engine) as session:
        contact = Contact(workspace_id=ws, email="jane.doe@example.com", first_name="Jane", last_name="Doe")
        session.add(contact)
        session.flush()
        session.add_all([Identity(workspace_id=ws, system="hubspot", external_id="101", object_type="contact",
                                  contact_id=contact.id),
                         Identity(workspace_id=ws, system="salesforce", external_id=LEAD_ID, object_type="Lead",
                                  contact_id=contact.id)])
        return ws, contact.id


def _drop(runtime, ws, change):
    """As processing calls it: with the contact the change's CRM record is linked to."""
    from hub.sync.identity import ExternalId, linked_contact_id

    with transaction(runtime.engine) as session:
        ref = ExternalId(change.system, change.external_id, change.object_type)
        return echo.drop_echoes(session, ws, change, linked_contact_id(session, ws, ref))


def _hs(fields, source="CRM_UI", source_id=None, at=None):
    return ContactChange(system="hubspot", external_id="101", object_type="contact", fields=fields,
                         changed_at=at or utcnow(), change_source=source, source_id=source_id)


def _sf(fields, by=PERSON, at=None):
    return ContactChange(system="salesforce", external_id=LEAD_ID, object_type="Lead", fields=fields,
                         changed_at=at or utcnow(), change_source=by)


def test_hubspot_change_by_our_app_is_an_echo(runtime, linked):
    ws, _ = linked
    assert _drop(runtime, ws, _hs({"title": "CEO"}, "INTEGRATION", HUBSPOT_APP_ID)).fields == {}


def test_hubspot_change_by_another_integration_is_kept(runtime, linked):
    ws, _ = linked
    assert _drop(runtime, ws, _hs({"title": "CEO"}, "INTEGRATION", "999")).fields == {"title": "CEO"}


def test_ledger_recognises_a_write_in_another_format(runtime, linked):
    ws, contact_id = linked
    with transaction(runtime.engine) as session:
        echo.record_writes(session, ws, "salesforce", contact_id, LEAD_ID, {"phone": "+14155552671"}, MAPPING)
    kept = _drop(runtime, ws, _sf({"phone": "+1 (415) 555-2671", "title": "VP"}))
    assert kept.fields == {"title": "VP"}


def test_mixed_salesforce_snapshot_is_judged_field_by_field(runtime, linked):
    """Last modified by the integration user, but a person changed Phone before the hub wrote Title."""
    ws, contact_id = linked
    with transaction(runtime.engine) as session:
        echo.remember_values(session, ws, "salesforce", LEAD_ID,
                             {"title": "Old", "phone": "+14155550100", "first_name": "Jane"})
        echo.record_writes(session, ws, "salesforce", contact_id, LEAD_ID, {"title": "CMO"}, MAPPING)
    kept = _drop(runtime, ws, _sf({"title": "CMO", "phone": "+1 415 555 0199", "first_name": "Jane"}, by=SF_USER))
    assert kept.fields == {"phone": "+1 415 555 0199"}


def test_salesforce_fields_the_hub_already_knew_are_not_changes(runtime, linked):
    ws, _ = linked
    first = _drop(runtime, ws, _sf({"first_name": "Jane", "last_name": "Doe"}))
    assert first.fields == {"first_name": "Jane", "last_name": "Doe"}
    second = _drop(runtime, ws, _sf({"first_name": "Janet", "last_name": "Doe"}))
    assert second.fields == {"first_name": "Janet"}


def test_older_salesforce_message_does_not_roll_the_snapshot_back(runtime, linked):
    ws, _ = linked
    now = utcnow()
    _drop(runtime, ws, _sf({"first_name": "New"}, at=now))
    late = _drop(runtime, ws, _sf({"first_name": "Old"}, at=now - timedelta(minutes=5)))
    assert late.fields == {"first_name": "Old"}       # processing judges it by its (older) time
    with transaction(runtime.engine) as session:
        snapshot = echo.load_snapshot(session, ws, "salesforce", LEAD_ID)
        assert snapshot.values["first_name"] == "New"


def test_a_change_made_well_before_the_write_is_not_its_echo(runtime, linked):
    ws, contact_id = linked
    with transaction(runtime.engine) as session:
        echo.record_writes(session, ws, "hubspot", contact_id, "101", {"title": "CEO"}, MAPPING)
    kept = _drop(runtime, ws, _hs({"title": "CEO"}, at=utcnow() - timedelta(minutes=10)))
    assert kept.fields == {"title": "CEO"}


def test_fields_the_crm_may_not_set_are_dropped(runtime, linked):
    ws, _ = linked
    kept = _drop(runtime, ws, _sf({"lifecycle_stage": "Working - Contacted", "score": 99, "city": "Oslo"}))
    assert kept.fields == {"city": "Oslo"}


def test_non_crm_changes_pass_untouched(runtime, linked):
    ws, _ = linked
    change = ContactChange(system="form", fields={"title": "CEO"})
    assert _drop(runtime, ws, change) is change


def test_ledger_purge_removes_only_old_entries(runtime, linked):
    ws, contact_id = linked
    with transaction(runtime.engine) as session:
        echo.record_writes(session, ws, "hubspot", contact_id, "101", {"title": "A"}, MAPPING,
                           written_at=utcnow() - timedelta(days=2))
        echo.record_writes(session, ws, "hubspot", contact_id, "101", {"title": "B"}, MAPPING)
    with transaction(runtime.engine) as session:
        assert echo.purge_ledger(session) == 1


def test_value_carried_in_a_message_for_another_fields_edit_is_not_an_edit(runtime, linked):
    """Salesforce sends the whole record: a message for a FirstName edit still holds the LastName the
    hub has since overwritten; stamped with the FirstName edit's time it must not win."""
    ws, contact_id = linked
    _drop(runtime, ws, _sf({"first_name": "Jane", "last_name": "Doe"}))
    with transaction(runtime.engine) as session:        # the hub writes a newer LastName from HubSpot
        echo.record_writes(session, ws, "salesforce", contact_id, LEAD_ID, {"last_name": "Smith"}, MAPPING)
        echo.remember_values(session, ws, "salesforce", LEAD_ID, {"last_name": "Smith"})
    kept = _drop(runtime, ws, _sf({"first_name": "Janet", "last_name": "Doe"}))
    assert kept.fields == {"first_name": "Janet"}


def test_a_persons_value_over_the_hubs_write_makes_the_field_unknown(runtime, linked):
    """Which came last in Salesforce (the hub's write or the person's edit) is unknown: the snapshot
    forgets the field so the next push writes the canonical value instead of skipping it."""
    ws, contact_id = linked
    _drop(runtime, ws, _sf({"title": "Old"}))
    with transaction(runtime.engine) as session:
        echo.record_writes(session, ws, "salesforce", contact_id, LEAD_ID, {"title": "Hub"}, MAPPING)
        echo.remember_values(session, ws, "salesforce", LEAD_ID, {"title": "Hub"})
    kept = _drop(runtime, ws, _sf({"title": "Person"}))
    assert kept.fields == {"title": "Person"}
    with transaction(runtime.engine) as session:
        assert "title" not in echo.load_snapshot(session, ws, "salesforce", LEAD_ID).values


def test_a_persons_value_from_before_the_hubs_write_leaves_the_write_in_place(runtime, linked):
    """A message stamped well before the hub's write: Salesforce holds the write; processing judges the
    person's value by its time, and the snapshot keeps the write so a newer canonical value is pushed."""
    ws, contact_id = linked
    _drop(runtime, ws, _sf({"title": "Old"}, at=utcnow() - timedelta(minutes=2)))
    with transaction(runtime.engine) as session:
        echo.record_writes(session, ws, "salesforce", contact_id, LEAD_ID, {"title": "Hub"}, MAPPING)
        echo.remember_values(session, ws, "salesforce", LEAD_ID, {"title": "Hub"})
    kept = _drop(runtime, ws, _sf({"title": "Person"}, at=utcnow() - timedelta(seconds=30)))
    assert kept.fields == {"title": "Person"}
    with transaction(runtime.engine) as session:
        assert echo.load_snapshot(session, ws, "salesforce", LEAD_ID).values["title"] == "Hub"


def test_one_job_reads_the_workspace_set_up_once_across_its_transactions(runtime, linked):
    from hub.sync import connected
    from tests.db_helpers import statements_sent

    ws, _ = linked

    def reads_connections(sql: str) -> bool:
        return sql.lstrip().upper().startswith("SELECT") and "FROM connection" in sql

    with statements_sent(runtime.engine, reads_connections) as seen:
        with connected.once_per_job():
            for _ in range(3):
                assert _drop(runtime, ws, _hs({"title": "CEO"}, "INTEGRATION", HUBSPOT_APP_ID)).fields == {}
        assert len(seen) == 1
        seen.clear()
        for _ in range(2):                     # outside a job: once per transaction
            _drop(runtime, ws, _hs({"title": "CEO"}, "INTEGRATION", HUBSPOT_APP_ID))
        assert len(seen) == 2


def test_the_next_job_sees_a_set_up_change(runtime, linked):
    from tests.conftest import HUBSPOT_APP_SECRET, HUBSPOT_PORTAL_ID
    from hub.sync import connected

    ws, _ = linked
    with connected.once_per_job():
        assert _drop(runtime, ws, _hs({"title": "CEO"}, "INTEGRATION", HUBSPOT_APP_ID)).fields == {}
    admin.connect(runtime, ws, "hubspot", HUBSPOT_PORTAL_ID,
                  {"access_token": "test-access-token", "app_secret": HUBSPOT_APP_SECRET}, {"app_id": "999"})
    with connected.once_per_job():     # the app HUBSPOT_APP_ID is no longer the hub's
        assert _drop(runtime, ws, _hs({"title": "CTO"}, "INTEGRATION", HUBSPOT_APP_ID)).fields == {"title": "CTO"}
