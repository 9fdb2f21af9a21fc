"""End to end against the loopback CRM fakes: a signed demo-form submission becomes an MQL in HubSpot
and Salesforce with an owner, an open task, score, grade and reasons; a missed SLA reassigns the
lead (fake clock) and is logged; notices go to Slack (a local HTTP server) or to the log."""
from __future__ import annotations

import json
import logging
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from hub.db import transaction
from hub.models import Assignment, Contact, LeadEffect, Outbox, Rep, SyncLog, utcnow
from hub.rules import sla
from hub.rules.notices import configure_notice
from hub.sync.worker import run_until_settled
from tests.conftest import fixture_json, run_pipeline
from hub.sandbox.hubspot_fake import HubSpotFake
from hub.sandbox.salesforce_fake import SalesforceFake
from hub.sandbox.server import serve
from hub.sandbox.wiring import connect_hubspot_fake, connect_salesforce_fake, point_runtime_at
from tests.receiver_helpers import add_source
from hub.sandbox.signing import standard_webhook_headers

SECRET = fixture_json("standard-webhooks/test-vectors.json")["vectors"][0]["secret"]
REPS = (("alice@seller.io", "111", "0055g00000ALICEAAA"), ("bob@seller.io", "222", "0055g00000BOBBBAAA"))


@pytest.fixture
def crms(runtime, workspace):
    hubspot, salesforce = HubSpotFake(), SalesforceFake()
    with serve(hubspot) as hs, serve(salesforce) as sf:
        point_runtime_at(runtime, hubspot_url=hs.url, salesforce_login_url=sf.url)
        connect_hubspot_fake(runtime, workspace["workspace_id"], hubspot)
        connect_salesforce_fake(runtime, workspace["workspace_id"], salesforce, hub_fields=True)
        yield hubspot, salesforce


@pytest.fixture
def reps(runtime, workspace):
    with transaction(runtime.engine) as session:
        for email, owner_id, user_id in REPS:
            session.add(Rep(workspace_id=workspace["workspace_id"], email=email, weight=1.0,
                            hubspot_owner_id=owner_id, salesforce_user_id=user_id))
    return REPS


def demo_form(email: str) -> bytes:
    """The generic form body of DESIGN.md: a VP at a 500-person company asks for a demo."""
    document = fixture_json("standard-webhooks/form.submitted__vp-demo.json")
    document["timestamp"] = utcnow().isoformat().replace("+00:00", "Z")
    document["data"]["email"] = email
    return json.dumps(document).encode()


def post_form(client, runtime, workspace, email: str) -> None:
    path = add_source(runtime, workspace, "generic", SECRET)
    body = demo_form(email)
    response = client.post(path, data=body, headers=standard_webhook_headers(SECRET, f"msg_{email}", body))
    assert response.status_code == 200, response.get_data(as_text=True)


def work_until_settled(runtime, limit_seconds: float = 15.0) -> float:
    """Run the relay and worker until no foreground work is waiting (periodic jobs excluded)."""
    return run_until_settled(runtime, limit_seconds)


def hubspot_tasks_for(hubspot: HubSpotFake, contact_id: str) -> list[dict]:
    return [t for t in hubspot.tasks.values()
            if any(str(a["to"]["id"]) == str(contact_id) for a in t.get("associations", []))]


def test_vp_demo_request_becomes_an_mql_with_owner_task_score_grade_and_reasons_in_both_crms(
        client, runtime, workspace, crms, reps, caplog):
    hubspot, salesforce = crms
    caplog.set_level(logging.INFO, logger="hub.rules")
    post_form(client, runtime, workspace, "vp@bigco.example")

    elapsed = work_until_settled(runtime)

    with transaction(runtime.engine) as session:
        contact = session.scalar(select(Contact).where(Contact.email == "vp@bigco.example"))
        assignment = session.scalar(select(Assignment).where(Assignment.contact_id == contact.id))
        effects = session.scalars(select(LeadEffect)).all()
    assert (contact.score, contact.grade, contact.mql, contact.lifecycle_stage) == (55.0, "B", True,
                                                                                     "marketingqualifiedlead")
    assert [(e.kind, e.status) for e in effects] == [("handoff", "done")]
    assert (assignment.owner_email, assignment.reason, assignment.status) == ("alice@seller.io", "round_robin", "open")
    assert assignment.due_at == assignment.assigned_at + timedelta(hours=24)

    hs_contact = hubspot.contact_by_email("vp@bigco.example")
    values = hs_contact["values"]
    assert values["lifecyclestage"] == "marketingqualifiedlead"
    assert values["hubspot_owner_id"] == "111"
    assert float(values["hub_score"]) == 55.0 and values["hub_grade"] == "B"
    assert values["hub_score_reasons"] == "Demo requested +55"
    [hs_task] = hubspot_tasks_for(hubspot, hs_contact["id"])
    assert hs_task["properties"]["hs_task_status"] == "NOT_STARTED"
    assert hs_task["properties"]["hubspot_owner_id"] == "111"

    [lead] = salesforce.find("Lead", "vp@bigco.example")
    assert lead["Status"] == "Working - Contacted"
    assert lead["OwnerId"] == "0055g00000ALICEAAA"
    assert (float(lead["Hub_Score__c"]), lead["Hub_Grade__c"], lead["Hub_Score_Reasons__c"]) == (
        55.0, "B", "Demo requested +55")
    [sf_task] = [t for t in salesforce.records["Task"].values() if t.get("WhoId") == lead["Id"]]
    assert (sf_task["Status"], sf_task["OwnerId"]) == ("Not Started", "0055g00000ALICEAAA")

    assert any("notice (no channel configured)" in r.getMessage() for r in caplog.records)
    assert elapsed < 10


def test_a_second_run_of_the_same_handoff_creates_no_second_task(client, runtime, workspace, crms, reps):
    hubspot, salesforce = crms
    post_form(client, runtime, workspace, "vp@bigco.example")
    work_until_settled(runtime)
    from hub.rules.handoff import deliver

    with transaction(runtime.engine) as session:
        assignment_id = session.scalar(select(Assignment.id))
    deliver(runtime, assignment_id)

    assert len(hubspot.tasks) == 1
    assert len(salesforce.records["Task"]) == 1


def test_owner_who_misses_the_sla_loses_the_lead_to_the_next_rep_and_it_is_logged(
        client, runtime, workspace, crms, reps, caplog):
    hubspot, salesforce = crms
    post_form(client, runtime, workspace, "vp@bigco.example")
    work_until_settled(runtime)
    caplog.set_level(logging.INFO, logger="hub.rules")

    early = sla.check_overdue(runtime, workspace["workspace_id"], now=utcnow() + timedelta(hours=23))
    late = sla.check_overdue(runtime, workspace["workspace_id"], now=utcnow() + timedelta(hours=25))

    assert early == {"acted": 0, "reassigned": 0, "escalated": 0}
    assert late["reassigned"] == 1
    with transaction(runtime.engine) as session:
        first, second = session.scalars(select(Assignment).order_by(Assignment.id)).all()
        logged = session.scalar(select(SyncLog.error).where(SyncLog.operation == "reassign"))
    assert (first.status, second.status, second.previous_id) == ("reassigned", "open", first.id)
    assert second.owner_email == "bob@seller.io"
    assert logged == "a***@seller.io -> b***@seller.io"
    assert any("reassigned" in r.getMessage() and "missed the 24" in r.getMessage() for r in caplog.records)
    [lead] = salesforce.find("Lead", "vp@bigco.example")
    assert lead["OwnerId"] == "0055g00000BOBBBAAA"
    assert hubspot.contact_by_email("vp@bigco.example")["values"]["hubspot_owner_id"] == "222"
    assert len(hubspot.tasks) == 2 and len(salesforce.records["Task"]) == 2


def test_when_no_other_rep_can_take_the_lead_it_is_escalated(client, runtime, workspace, crms, reps, caplog):
    caplog.set_level(logging.INFO, logger="hub.rules")
    post_form(client, runtime, workspace, "vp@bigco.example")
    work_until_settled(runtime)
    start = utcnow()

    outcomes = [sla.check_overdue(runtime, workspace["workspace_id"], now=start + timedelta(hours=h))
                for h in (25, 50, 75)]

    # alice misses it -> bob; bob misses it -> alice is excluded, nobody is left -> escalated; then nothing is due
    assert outcomes == [{"acted": 0, "reassigned": 1, "escalated": 0}, {"acted": 0, "reassigned": 0, "escalated": 1},
                        {"acted": 0, "reassigned": 0, "escalated": 0}]
    with transaction(runtime.engine) as session:
        assert [a.status for a in session.scalars(select(Assignment).order_by(Assignment.id))] == [
            "reassigned", "escalated"]
        assert session.scalar(select(SyncLog.error).where(SyncLog.operation == "escalate")) == \
            "owner b***@seller.io missed the SLA"
    assert any("notice (no channel configured)" in r.getMessage() and "MQL SLA missed" in r.getMessage()
               for r in caplog.records)


def test_owner_who_acts_keeps_the_lead(client, runtime, workspace, crms, reps):
    from hub.models import Activity

    post_form(client, runtime, workspace, "vp@bigco.example")
    work_until_settled(runtime)
    with transaction(runtime.engine) as session:
        assignment = session.scalar(select(Assignment))
        session.add(Activity(workspace_id=assignment.workspace_id, contact_id=assignment.contact_id, kind="sales_call",
                             occurred_at=utcnow(), properties={}, idempotency_key="call-1"))

    counts = sla.check_overdue(runtime, workspace["workspace_id"], now=utcnow() + timedelta(hours=25))

    assert counts["acted"] == 1
    with transaction(runtime.engine) as session:
        assert session.scalar(select(Assignment.note)) == "activity sales_call"


def test_mql_notice_goes_to_slack_when_configured(client, runtime, workspace, crms, reps, httpserver):
    httpserver.expect_request("/services/T000/B000/XXXX", method="POST").respond_with_data("ok")
    masked = configure_notice(runtime, workspace["workspace_id"], "slack",
                              {"webhook_url": httpserver.url_for("/services/T000/B000/XXXX")})
    assert masked["webhook_url"] == "***"

    post_form(client, runtime, workspace, "vp@bigco.example")
    work_until_settled(runtime)

    [(request, _)] = httpserver.log
    text = request.get_json()["text"]
    assert text.startswith("*New MQL for alice@seller.io*")
    assert "score 55, grade B" in text and "Demo requested +55" in text


def test_preflight_creates_the_hubspot_score_properties_in_their_group_and_checks_salesforce(runtime, workspace):
    from click.testing import CliRunner

    from hub.cli import main as hub_cli

    hubspot, salesforce = HubSpotFake(hub_properties=False), SalesforceFake()
    with serve(hubspot) as hs, serve(salesforce) as sf:
        point_runtime_at(runtime, hubspot_url=hs.url, salesforce_login_url=sf.url)
        connect_hubspot_fake(runtime, workspace["workspace_id"], hubspot)
        connect_salesforce_fake(runtime, workspace["workspace_id"], salesforce)
        monkeypatch_env = {"HUBSPOT_API_BASE": hs.url, "SALESFORCE_LOGIN_URL": sf.url}
        result = CliRunner(env=monkeypatch_env).invoke(
            hub_cli, ["rules", "preflight", "--workspace", workspace["workspace_id"]])

    assert {"hub_score", "hub_grade", "hub_score_reasons"} <= set(hubspot.properties)
    assert {hubspot.properties[name]["groupName"] for name in ("hub_score", "hub_grade", "hub_score_reasons")} == {
        "lead_hub"}
    assert result.output.splitlines() == ["hubspot: ok", "salesforce: ok"]
    assert result.exit_code == 0


def test_preflight_says_exactly_which_salesforce_fields_an_admin_must_add(runtime, workspace, monkeypatch):
    from click.testing import CliRunner

    from hub.cli import main as hub_cli
    from hub.sandbox import salesforce_fake

    without_hub_fields = [f for f in salesforce_fake.DESCRIBE_FIELDS["Contact"] if not f["name"].startswith("Hub_")]
    monkeypatch.setitem(salesforce_fake.DESCRIBE_FIELDS, "Contact", without_hub_fields)
    salesforce = SalesforceFake()
    with serve(salesforce) as sf:
        point_runtime_at(runtime, salesforce_login_url=sf.url)
        connect_salesforce_fake(runtime, workspace["workspace_id"], salesforce)
        result = CliRunner().invoke(hub_cli, ["rules", "preflight", "--workspace", workspace["workspace_id"]])

    assert result.exit_code == 1
    assert result.output.splitlines()[:4] == [
        "salesforce: missing Contact.Hub_Score__c, Contact.Hub_Grade__c, Contact.Hub_Score_Reasons__c",
        "  add Hub_Score__c: Number(5, 1), label 'Hub score' on Contact",
        "  add Hub_Grade__c: Text(2), label 'Hub grade' on Contact",
        "  add Hub_Score_Reasons__c: Text(255), label 'Hub score reasons' on Contact"]
