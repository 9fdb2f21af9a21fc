"""Creation restricted to a segment (`hub sync set --create-segment NAME`), like HubSpot's inclusion list."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from hub import defaults
from hub.cli import main as hub_cli
from hub.db import transaction
from hub.rules import store
from hub.rules.presets import B2B
from tests.sync_harness import two_crms


@pytest.fixture(autouse=True)
def fast_sync(monkeypatch):
    monkeypatch.setattr(defaults, "SYNC_PUSH_COALESCE_SECONDS", 0.0)


@pytest.fixture
def chiefs_only(runtime, workspace):
    ws = workspace["workspace_id"]
    document = store.to_document(B2B)
    document["segments"].append({"name": "chiefs", "when": "title == 'CEO'"})
    with transaction(runtime.engine) as session:
        store.save_rules(session, ws, document)
    result = CliRunner().invoke(hub_cli, ["sync", "set", "--workspace", ws, "--create-segment", "chiefs"])
    assert result.exit_code == 0 and "create_segment: chiefs" in result.output, result.output
    return ws


def test_contact_outside_the_segment_is_not_created_until_it_enters(runtime, client, chiefs_only):
    with two_crms(runtime, client, chiefs_only) as crms:
        crms.hubspot.ui_edit("eve@example.com", {"firstname": "Eve", "lastname": "Ng", "jobtitle": "Analyst"})
        crms.deliver()
        assert crms.salesforce.records["Lead"] == {}                  # outside "chiefs": not created
        [contact] = crms.contacts()
        crms.hubspot.ui_edit("eve@example.com", {"jobtitle": "CEO"})
        crms.deliver()
        [lead] = crms.salesforce.find("Lead", "eve@example.com")      # entering the segment created it
        assert (lead["FirstName"], lead["Title"]) == ("Eve", "CEO")
        assert ("salesforce", lead["Id"]) in crms.identities(contact.id)
        assert crms.violations() == []


def test_linked_contact_keeps_syncing_after_it_leaves_the_segment(runtime, client, chiefs_only):
    with two_crms(runtime, client, chiefs_only) as crms:
        crms.hubspot.ui_edit("max@example.com", {"firstname": "Max", "lastname": "Ro", "jobtitle": "CEO"})
        crms.deliver()
        [lead] = crms.salesforce.find("Lead", "max@example.com")
        crms.hubspot.ui_edit("max@example.com", {"jobtitle": "Advisor"})
        crms.deliver()
        assert crms.salesforce.records["Lead"][lead["Id"]]["Title"] == "Advisor"
        # A Salesforce-born person outside the segment is not created in HubSpot either.
        crms.salesforce.ui_edit("Lead", None, {"Email": "sam@example.com", "LastName": "Sam", "Company": "S"})
        crms.deliver()
        assert crms.hubspot.contact_by_email("sam@example.com") is None
        assert len(crms.contacts()) == 2
