"""CRM deletions: unlink (default) or propagate (`hub sync set --deletions propagate`), against the loopback fakes."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from hub import defaults
from hub.cli import main as hub_cli
from hub.db import transaction
from hub.models import Outbox, SyncLog
from tests.conftest import run_pipeline
from tests.sync_harness import two_crms


@pytest.fixture(autouse=True)
def fast_sync(monkeypatch):
    monkeypatch.setattr(defaults, "SYNC_PUSH_COALESCE_SECONDS", 0.0)


def _set(workspace_id: str, *args) -> dict:
    result = CliRunner().invoke(hub_cli, ["sync", "set", "--workspace", workspace_id, *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _synced_person(crms, email: str = "dee@example.com") -> tuple[str, str]:
    crms.hubspot.ui_edit(email, {"firstname": "Dee", "lastname": "Doe", "company": "Acme"})
    crms.deliver()
    [lead] = crms.salesforce.find("Lead", email)
    return crms.hubspot.contact_by_email(email)["id"], lead["Id"]


def test_sync_settings_are_shown_and_validated(runtime, workspace):
    ws = workspace["workspace_id"]
    assert _set(ws, "--deletions", "propagate") == {"deletions": "propagate", "create": True, "create_segment": None}
    result = CliRunner().invoke(hub_cli, ["sync", "show", "--workspace", ws])
    assert result.exit_code == 0 and "deletions: propagate" in result.output
    result = CliRunner().invoke(hub_cli, ["sync", "set", "--workspace", ws, "--deletions", "erase"])
    assert result.exit_code != 0 and "erase" in result.output
    result = CliRunner().invoke(hub_cli, ["sync", "set", "--workspace", "nope", "--deletions", "unlink"])
    assert result.exit_code != 0 and "no workspace nope" in result.output


def test_default_deletion_unlinks_and_the_other_record_stays(runtime, client, workspace):
    with two_crms(runtime, client, workspace["workspace_id"]) as crms:
        hubspot_id, lead_id = _synced_person(crms)
        crms.hubspot.ui_delete("dee@example.com")
        crms.deliver()
        [contact] = crms.contacts()
        assert crms.identities(contact.id) == {("salesforce", lead_id)}
        assert lead_id in crms.salesforce.records["Lead"]
        [decision] = crms.decisions("deletion.")
        assert decision.operation == "deletion.unlink"
        # A later edit in Salesforce updates the contact; the hub does not bring the HubSpot record back.
        crms.salesforce.ui_edit("Lead", lead_id, {"Title": "COO"})
        crms.deliver()
        assert crms.hubspot.contacts == {} and crms.contacts()[0].title == "COO"


def test_propagated_hubspot_deletion_deletes_the_lead_once_and_the_echo_does_not_bounce(runtime, client, workspace):
    ws = workspace["workspace_id"]
    _set(ws, "--deletions", "propagate")
    with two_crms(runtime, client, ws) as crms:
        hubspot_id, lead_id = _synced_person(crms)
        crms.hubspot.ui_delete("dee@example.com")
        crms.deliver()
        assert lead_id not in crms.salesforce.records["Lead"] and lead_id in crms.salesforce.recycle_bin
        deletes = [r for r in crms.salesforce.api_requests() if r.method == "DELETE"]
        assert len(deletes) == 1 and deletes[0].query["ids"] == [lead_id]
        [contact] = crms.contacts()
        assert crms.identities(contact.id) == set()
        assert [d.operation for d in crms.decisions("deletion.")] == ["deletion.propagate"]
        assert f"salesforce:{lead_id}" in crms.decisions("deletion.")[0].error
        with transaction(runtime.engine) as session:
            log = session.scalar(select(SyncLog).where(SyncLog.operation == "sobjects.delete"))
            assert log.status == "ok" and log.object_ids == [lead_id]
        assert crms.violations() == []


def test_salesforce_deletion_found_by_polling_propagates_and_the_hubspot_echo_is_recognised(
        runtime, client, workspace):
    """Outbound Messages never fire on delete: polling reads the org's delete log (Get Deleted)."""
    from hub.sync import polling
    from hub.sync.engine import connectors_for

    ws = workspace["workspace_id"]
    _set(ws, "--deletions", "propagate")
    with two_crms(runtime, client, ws, poll_interval=30) as crms:
        hubspot_id, lead_id = _synced_person(crms)
        crms.salesforce.clock.advance(-120)             # Get Deleted reads to the minute: a deletion 2 min ago
        crms.salesforce.ui_delete("Lead", lead_id)
        crms.salesforce.clock.advance(120)
        connector = connectors_for(runtime, ws)["salesforce"]
        assert polling.poll_deleted(runtime, ws, connector) == 1
        assert polling.poll_deleted(runtime, ws, connector) == 0          # read once
        run_pipeline(runtime)                      # the deletion event, then the propagated archive in HubSpot
        crms.deliver()                             # HubSpot's deletion webhook comes back
        assert crms.hubspot.contacts == {} and hubspot_id in crms.hubspot.archived
        archives = crms.hubspot.api_requests("/crm/v3/objects/contacts/batch/archive")
        assert len(archives) == 1 and archives[0].json() == {"inputs": [{"id": hubspot_id}]}
        assert [d.operation for d in crms.decisions("deletion.")] == ["deletion.propagate", "deletion.echo"]
        assert not [r for r in crms.salesforce.api_requests() if r.method == "DELETE"]   # nothing bounced back
        assert crms.violations() == []


def test_deletes_are_batched_per_vendor_limit(runtime, client, workspace):
    from hub.sync import deletions

    ws = workspace["workspace_id"]
    with two_crms(runtime, client, ws) as crms:
        ids = [crms.salesforce.ui_edit("Lead", None, {"Email": f"x{n}@example.com", "LastName": "X",
                                                      "Company": "A"})["Id"] for n in range(250)]
        hs_ids = [crms.hubspot.ui_edit(f"x{n}@example.com", {})["id"] for n in range(150)]
        with transaction(runtime.engine) as session:
            row = Outbox(workspace_id=ws, job=deletions.JOB, attempts=0, payload={"targets": [
                {"system": "salesforce", "id": i, "type": "Lead"} for i in ids + ids[:1]] + [
                {"system": "hubspot", "id": i, "type": "contact"} for i in hs_ids]})
            session.add(row)
            session.flush()
            session.expunge(row)
        assert deletions.run_delete_outbox(runtime, row) == {"deleted": 400, "failed": 0}
        deletes = [r for r in crms.salesforce.api_requests() if r.method == "DELETE"]
        assert [len(r.query["ids"][0].split(",")) for r in deletes] == [200, 50]
        archives = crms.hubspot.api_requests("/crm/v3/objects/contacts/batch/archive")
        assert [len(r.json()["inputs"]) for r in archives] == [100, 50]
        assert crms.salesforce.records["Lead"] == {} and crms.hubspot.contacts == {}
        assert crms.violations() == []
