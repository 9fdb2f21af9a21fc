"""An email changed on a linked record is an email update everywhere, never a second person.

Both CRMs are the loopback fakes; webhooks come in through the hub's routes (tests/sync_harness.py).
"""
from __future__ import annotations

import pytest

from hub import defaults
from tests.sync_harness import two_crms


@pytest.fixture(autouse=True)
def fast_sync(monkeypatch):
    monkeypatch.setattr(defaults, "SYNC_PUSH_COALESCE_SECONDS", 0.0)


def _only_contact(crms):
    [contact] = crms.contacts()
    return contact


def test_email_changed_in_hubspot_updates_the_linked_lead(runtime, client, workspace):
    with two_crms(runtime, client, workspace["workspace_id"]) as crms:
        crms.hubspot.ui_edit("ann@example.com", {"firstname": "Ann", "lastname": "Lee", "company": "Acme"})
        crms.deliver()
        [lead] = crms.salesforce.find("Lead", "ann@example.com")
        crms.hubspot.ui_change_email("ann@example.com", "ann@new.example.com")
        crms.deliver()
        contact = _only_contact(crms)
        assert contact.email == "ann@new.example.com"
        assert crms.salesforce.records["Lead"][lead["Id"]]["Email"] == "ann@new.example.com"
        assert len(crms.salesforce.records["Lead"]) == 1 and len(crms.hubspot.contacts) == 1
        assert crms.violations() == []


def test_email_changed_in_salesforce_updates_the_hubspot_contact_by_id(runtime, client, workspace):
    with two_crms(runtime, client, workspace["workspace_id"]) as crms:
        lead = crms.salesforce.ui_edit("Lead", None, {"Email": "bo@example.com", "LastName": "Bo", "Company": "Acme"})
        crms.deliver()
        hubspot_id = crms.hubspot.contact_by_email("bo@example.com")["id"]
        crms.salesforce.ui_edit("Lead", lead["Id"], {"Email": "bo@new.example.com", "Title": "CTO"})
        crms.deliver()
        contact = _only_contact(crms)
        assert (contact.email, contact.title) == ("bo@new.example.com", "CTO")
        assert crms.identities(contact.id) == {("hubspot", hubspot_id), ("salesforce", lead["Id"])}
        assert list(crms.hubspot.contacts) == [hubspot_id]                 # the same record, not a new one
        assert crms.hubspot.contacts[hubspot_id]["values"]["email"] == "bo@new.example.com"
        assert crms.hubspot.contacts[hubspot_id]["values"]["jobtitle"] == "CTO"
        assert crms.hubspot.api_requests("/crm/v3/objects/contacts/batch/update")
        assert crms.violations() == []


def test_an_older_email_change_does_not_overwrite_a_newer_one(runtime, client, workspace):
    with two_crms(runtime, client, workspace["workspace_id"]) as crms:
        lead = crms.salesforce.ui_edit("Lead", None, {"Email": "cy@example.com", "LastName": "Cy", "Company": "Acme"})
        crms.deliver()
        crms.salesforce.clock.advance(-3600)          # a message about an edit made before the hub's value
        crms.salesforce.ui_edit("Lead", lead["Id"], {"Email": "cy@old.example.com"})
        crms.salesforce.clock.advance(3600)
        crms.deliver()
        assert _only_contact(crms).email == "cy@example.com"


def test_email_taken_by_another_synced_person_is_a_logged_conflict_not_a_merge(runtime, client, workspace):
    with two_crms(runtime, client, workspace["workspace_id"]) as crms:
        ann = crms.salesforce.ui_edit("Lead", None, {"Email": "ann@example.com", "LastName": "Lee", "Company": "A"})
        crms.salesforce.ui_edit("Lead", None, {"Email": "bob@example.com", "LastName": "Bob", "Company": "B"})
        crms.deliver()
        ann_hubspot = crms.hubspot.contact_by_email("ann@example.com")["id"]
        # Salesforce allows two Leads with one email (HubSpot does not): Ann's Lead takes Bob's address.
        crms.salesforce.ui_edit("Lead", ann["Id"], {"Email": "bob@example.com", "Title": "VP"})
        crms.deliver()
        emails = sorted(c.email for c in crms.contacts())
        assert emails == ["ann@example.com", "bob@example.com"]           # two people still
        ann_contact = next(c for c in crms.contacts() if c.email == "ann@example.com")
        assert ann_contact.title == "VP"                                    # the rest of the change applies
        assert crms.hubspot.contacts[ann_hubspot]["values"]["email"] == "ann@example.com"
        assert len(crms.hubspot.contacts) == 2
        [decision] = crms.decisions("email.")
        assert decision.operation == "email.conflict" and decision.object_ids[0] == ann["Id"]
        assert "bob@example.com" not in decision.error                     # personal data stays masked
        assert crms.violations() == []
