"""The MQL SLA against the loopback CRM fakes (fake clock): a follow-up task completed in HubSpot or
Salesforce keeps the lead with its owner; an open task past the deadline moves the lead to the next rep,
the old task Deferred in both CRMs and a new one opened for the new owner; a CRM that cannot be read
moves nobody; the task reads are batched across the whole pass. Also `hub connect`: it creates the
HubSpot score properties, tells which Salesforce fields to add, and still stores a connection when
the CRM is unreachable."""
from __future__ import annotations

import logging
from datetime import timedelta

from click.testing import CliRunner
from sqlalchemy import select

from hub import defaults
from hub.cli import main as hub_cli
from hub.connectors.hubspot import HubSpotConnector
from hub.connectors.salesforce import SalesforceConnector
from hub.db import transaction
from hub.models import Assignment, Connection, SyncLog, utcnow
from hub.rules import sla
from hub.sandbox import salesforce_fake
from hub.sandbox.hubspot_fake import HubSpotFake
from hub.sandbox.salesforce_fake import SalesforceFake
from hub.sandbox.server import serve
from hub.sandbox.validation import hubspot_violations, salesforce_violations
from hub.sync.tokens import StaticTokens
from tests.conftest import CLOSED_PORT_URL
from tests.test_rules_handoff import crms, post_form, reps, work_until_settled  # noqa: F401 - fixtures

TASK_READ = "/crm/v3/objects/tasks/batch/read"
TASK_UPDATE = "/crm/v3/objects/tasks/batch/update"
ALICE_SF, BOB_SF = "0055g00000ALICEAAA", "0055g00000BOBBBAAA"


def assignments(runtime) -> list[Assignment]:
    with transaction(runtime.engine) as session:
        rows = list(session.scalars(select(Assignment).order_by(Assignment.id)))
        session.expunge_all()
        return rows


def handed_off(client, runtime, workspace, *emails: str) -> list[Assignment]:
    for email in emails:
        post_form(client, runtime, workspace, email)
    work_until_settled(runtime)
    return assignments(runtime)


def overdue_pass(runtime, workspace, hours: float = 25) -> dict:
    return sla.check_overdue(runtime, workspace["workspace_id"], now=utcnow() + timedelta(hours=hours))


def captured(fake, path: str) -> list:
    return [r for r in fake.requests if r.path == path]


def task_queries(salesforce: SalesforceFake) -> list:
    return [r for r in salesforce.requests if " FROM Task " in (r.query.get("q") or [""])[0]]


def task_collection_updates(salesforce: SalesforceFake) -> list:
    return [r for r in salesforce.requests if r.method == "PATCH" and r.path.endswith("/composite/sobjects")
            and any(rec["attributes"]["type"] == "Task" for rec in r.json()["records"])]


def assert_documented(hubspot: HubSpotFake, salesforce: SalesforceFake) -> None:
    assert hubspot_violations(hubspot.requests) == []
    assert salesforce_violations(salesforce.requests) == []


# --- acted in the CRM -------------------------------------------------------------------------------

def test_task_completed_in_hubspot_before_the_deadline_keeps_the_lead(client, runtime, workspace, crms, reps, caplog):
    hubspot, salesforce = crms
    [assignment] = handed_off(client, runtime, workspace, "vp@bigco.example")
    hubspot.ui_edit_task(assignment.crm_refs["hubspot_task"], {"hs_task_status": "COMPLETED"})
    caplog.set_level(logging.INFO, logger="hub.rules")

    counts = overdue_pass(runtime, workspace)

    assert counts == {"acted": 1, "reassigned": 0, "escalated": 0}
    [kept] = assignments(runtime)
    assert (kept.status, kept.note) == ("acted", f"hubspot task {assignment.crm_refs['hubspot_task']} COMPLETED")
    assert len(hubspot.tasks) == 1 and len(salesforce.records["Task"]) == 1
    assert captured(hubspot, TASK_UPDATE) == [] and task_collection_updates(salesforce) == []
    assert any("kept by a***@seller.io" in r.getMessage() and "COMPLETED" in r.getMessage() for r in caplog.records)
    assert_documented(hubspot, salesforce)


def test_task_completed_in_salesforce_keeps_the_lead(client, runtime, workspace, crms, reps):
    hubspot, salesforce = crms
    [assignment] = handed_off(client, runtime, workspace, "vp@bigco.example")
    salesforce.ui_edit("Task", assignment.crm_refs["salesforce_task"], {"Status": "Completed"})

    counts = overdue_pass(runtime, workspace)

    assert counts == {"acted": 1, "reassigned": 0, "escalated": 0}
    [kept] = assignments(runtime)
    assert kept.note == f"salesforce task {assignment.crm_refs['salesforce_task']} Completed"
    assert_documented(hubspot, salesforce)


def test_a_task_merely_in_progress_does_not_count_as_acted(client, runtime, workspace, crms, reps):
    hubspot, salesforce = crms
    [assignment] = handed_off(client, runtime, workspace, "vp@bigco.example")
    hubspot.ui_edit_task(assignment.crm_refs["hubspot_task"], {"hs_task_status": "IN_PROGRESS"})
    salesforce.ui_edit("Task", assignment.crm_refs["salesforce_task"], {"Status": "In Progress"})

    assert overdue_pass(runtime, workspace)["reassigned"] == 1


# --- reassigned: the old task is Deferred, the new owner gets a new one --------------------------------

def test_open_task_past_the_deadline_is_deferred_and_the_new_owner_gets_a_new_task(
        client, runtime, workspace, crms, reps, caplog):
    hubspot, salesforce = crms
    [first] = handed_off(client, runtime, workspace, "vp@bigco.example")
    old_hs, old_sf = first.crm_refs["hubspot_task"], first.crm_refs["salesforce_task"]
    caplog.set_level(logging.INFO, logger="hub.rules")

    counts = overdue_pass(runtime, workspace)

    assert counts == {"acted": 0, "reassigned": 1, "escalated": 0}
    old, new = assignments(runtime)
    assert (old.status, new.status, new.owner_email) == ("reassigned", "open", "bob@seller.io")
    assert (old.crm_refs["hubspot_task_deferred"], old.crm_refs["salesforce_task_deferred"]) == ("deferred", "deferred")
    note = "reassigned to bob@seller.io"

    old_hubspot_task = hubspot.tasks[old_hs]["properties"]
    assert old_hubspot_task["hs_task_status"] == "DEFERRED"
    assert old_hubspot_task["hs_task_body"].startswith("Score 55, grade B.")       # the original body is kept
    assert "Deferred by lead hub" in old_hubspot_task["hs_task_body"] and note in old_hubspot_task["hs_task_body"]
    new_hubspot_task = hubspot.tasks[new.crm_refs["hubspot_task"]]["properties"]
    assert (new_hubspot_task["hs_task_status"], new_hubspot_task["hubspot_owner_id"]) == ("NOT_STARTED", "222")

    old_sf_task = salesforce.records["Task"][old_sf]
    assert (old_sf_task["Status"], old_sf_task["OwnerId"]) == ("Deferred", ALICE_SF)
    assert "Deferred by lead hub" in old_sf_task["Description"] and note in old_sf_task["Description"]
    new_sf_task = salesforce.records["Task"][new.crm_refs["salesforce_task"]]
    assert (new_sf_task["Status"], new_sf_task["IsClosed"], new_sf_task["OwnerId"]) == ("Not Started", False, BOB_SF)

    with transaction(runtime.engine) as session:
        assert session.scalar(select(SyncLog.error).where(SyncLog.operation == "reassign")) == \
            "a***@seller.io -> b***@seller.io"
    messages = [r.getMessage() for r in caplog.records]
    assert any("reassigned" in m and "missed the 24" in m for m in messages)
    assert any(f"hubspot task {old_hs} set to Deferred" in m for m in messages)
    assert any(f"salesforce task {old_sf} set to Deferred" in m for m in messages)
    assert_documented(hubspot, salesforce)


def test_a_deferral_that_failed_is_retried_by_the_next_pass_and_done_once(client, runtime, workspace, crms, reps):
    hubspot, salesforce = crms
    [first] = handed_off(client, runtime, workspace, "vp@bigco.example")
    old_hs = first.crm_refs["hubspot_task"]
    original_update = hubspot.batch_update_tasks
    failures = []

    def failing_update(request, payload):      # the read answers; the batch update fails every attempt
        failures.append(payload)
        response = hubspot._error(500, "INTERNAL_ERROR", "injected failure")
        response.headers["Retry-After"] = "0"
        return response

    hubspot.batch_update_tasks = failing_update
    assert overdue_pass(runtime, workspace)["reassigned"] == 1
    assert len(failures) == defaults.RETRY_MAX_ATTEMPTS
    old, _new = assignments(runtime)
    assert "hubspot_task_deferred" not in old.crm_refs and old.crm_refs["salesforce_task_deferred"] == "deferred"
    assert hubspot.tasks[old_hs]["properties"]["hs_task_status"] == "NOT_STARTED"

    hubspot.batch_update_tasks = original_update
    assert overdue_pass(runtime, workspace, hours=25.1) == {"acted": 0, "reassigned": 0, "escalated": 0}
    assert hubspot.tasks[old_hs]["properties"]["hs_task_status"] == "DEFERRED"
    assert assignments(runtime)[0].crm_refs["hubspot_task_deferred"] == "deferred"

    updates_so_far = len(captured(hubspot, TASK_UPDATE))
    overdue_pass(runtime, workspace, hours=25.2)
    assert len(captured(hubspot, TASK_UPDATE)) == updates_so_far          # settled: never deferred twice
    assert hubspot.tasks[old_hs]["properties"]["hs_task_body"].count("Deferred by lead hub") == 1


def test_a_portal_that_refuses_the_deferred_status_is_logged_once_not_retried_every_pass(
        client, runtime, workspace, crms, reps, monkeypatch, caplog):
    from hub.sandbox import hubspot_fake

    hubspot, salesforce = crms
    [first] = handed_off(client, runtime, workspace, "vp@bigco.example")
    monkeypatch.setattr(hubspot_fake, "TASK_STATUSES", ("NOT_STARTED", "IN_PROGRESS", "WAITING", "COMPLETED"))

    assert overdue_pass(runtime, workspace)["reassigned"] == 1
    overdue_pass(runtime, workspace, hours=25.1)

    [update] = captured(hubspot, TASK_UPDATE)                              # refused (400), not tried again
    assert update.status == 400
    old, _new = assignments(runtime)
    assert old.crm_refs["hubspot_task_deferred"] == "refused VALIDATION_ERROR"
    assert old.crm_refs["salesforce_task_deferred"] == "deferred"
    assert hubspot.tasks[first.crm_refs["hubspot_task"]]["properties"]["hs_task_status"] == "NOT_STARTED"
    assert any(r.levelno == logging.ERROR and "hubspot refused to defer 1 old task(s)" in r.getMessage()
               for r in caplog.records)


# --- unknown: nobody is reassigned ---------------------------------------------------------------------

def test_a_crm_that_cannot_be_read_reassigns_nobody_this_pass(client, runtime, workspace, crms, reps, caplog):
    hubspot, salesforce = crms
    [first] = handed_off(client, runtime, workspace, "vp@bigco.example")
    hubspot.faults.fail_next(503, count=defaults.RETRY_MAX_ATTEMPTS, retry_after=0)
    caplog.set_level(logging.INFO, logger="hub.rules")

    counts = overdue_pass(runtime, workspace)

    assert counts == {"acted": 0, "reassigned": 0, "escalated": 0, "unread": 1}
    [still] = assignments(runtime)
    assert (still.status, still.owner_email) == ("open", "alice@seller.io")
    assert [t["properties"]["hs_task_status"] for t in hubspot.tasks.values()] == ["NOT_STARTED"]
    assert [t["Status"] for t in salesforce.records["Task"].values()] == ["Not Started"]
    assert salesforce.find("Lead", "vp@bigco.example")[0]["OwnerId"] == ALICE_SF
    messages = [r.getMessage() for r in caplog.records]
    assert any("hubspot tasks could not be read" in m for m in messages)
    assert any(f"lead {first.contact_id}: SLA not judged this pass, hubspot could not be read" in m for m in messages)

    assert overdue_pass(runtime, workspace, hours=25.1)["reassigned"] == 1   # readable again: judged
    assert_documented(hubspot, salesforce)


# --- batching ------------------------------------------------------------------------------------------

def test_one_pass_reads_and_defers_the_tasks_of_many_leads_in_one_call_per_crm(
        client, runtime, workspace, crms, reps):
    hubspot, salesforce = crms
    emails = ("vp1@bigco.example", "vp2@bigco.example", "vp3@bigco.example")
    handed = handed_off(client, runtime, workspace, *emails)
    assert len(handed) == 3
    reads_before, queries_before = len(captured(hubspot, TASK_READ)), len(task_queries(salesforce))

    counts = overdue_pass(runtime, workspace)

    assert counts == {"acted": 0, "reassigned": 3, "escalated": 0}
    [read] = captured(hubspot, TASK_READ)[reads_before:]
    assert sorted(i["id"] for i in read.json()["inputs"]) == sorted(a.crm_refs["hubspot_task"] for a in handed)
    [query] = task_queries(salesforce)[queries_before:]
    assert all(a.crm_refs["salesforce_task"] in query.query["q"][0] for a in handed)
    [update] = captured(hubspot, TASK_UPDATE)
    assert len(update.json()["inputs"]) == 3
    [patch] = task_collection_updates(salesforce)
    assert len(patch.json()["records"]) == 3
    assert_documented(hubspot, salesforce)


def test_task_reads_are_chunked_at_the_vendor_limits():
    hubspot, salesforce = HubSpotFake(), SalesforceFake()
    with serve(hubspot), serve(salesforce):
        hs = HubSpotConnector(StaticTokens(next(iter(hubspot.tokens))), api_base=hubspot.base_url)
        sf = SalesforceConnector(StaticTokens(next(iter(salesforce.tokens)), instance_url=salesforce.base_url))
        hs_found = hs.read_tasks([str(50_000_000 + n) for n in range(150)])
        sf_found = sf.read_tasks([f"00T5g{n:010d}AAA" for n in range(250)])

    assert hs_found == {} and sf_found == {}          # none exist: absent, not an error
    assert [len(r.json()["inputs"]) for r in captured(hubspot, TASK_READ)] == [100, 50]
    assert len(task_queries(salesforce)) == 2
    assert_documented(hubspot, salesforce)


# --- hub connect: the score fields ---------------------------------------------------------------------

def connection_kinds(runtime, workspace) -> list[str]:
    with transaction(runtime.engine) as session:
        return sorted(session.scalars(select(Connection.kind).where(
            Connection.workspace_id == workspace["workspace_id"])))


def test_connect_hubspot_creates_the_score_properties_in_their_group(runtime, workspace):
    hubspot = HubSpotFake(hub_properties=False)
    with serve(hubspot) as hs:
        result = CliRunner(env={"HUBSPOT_API_BASE": hs.url}).invoke(hub_cli, [
            "connect", "hubspot", "--workspace", workspace["workspace_id"],
            "--access-token", next(iter(hubspot.tokens)), "--portal-id", str(hubspot.portal_id)])

    assert result.exit_code == 0, result.output
    assert {hubspot.properties[name]["groupName"] for name in ("hub_score", "hub_grade", "hub_score_reasons")} == {
        "lead_hub"}
    assert result.output.splitlines()[-1] == "hubspot: ok"
    assert connection_kinds(runtime, workspace) == ["hubspot"]
    assert hubspot_violations(hubspot.requests) == []


def test_connect_hubspot_when_hubspot_is_unreachable_stores_the_connection_and_warns(runtime, workspace):
    result = CliRunner(env={"HUBSPOT_API_BASE": CLOSED_PORT_URL}).invoke(hub_cli, [
        "connect", "hubspot", "--workspace", workspace["workspace_id"], "--access-token", "pat-na1-secret-value",
        "--json"])

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("{") and "webhook_url" in result.stdout
    [warning] = result.stderr.splitlines()
    assert warning.startswith("warning: hubspot score fields not checked (RetriableError")
    assert warning.endswith(f"run `hub rules preflight --workspace {workspace['workspace_id']}`")
    assert "pat-na1-secret-value" not in result.output
    assert connection_kinds(runtime, workspace) == ["hubspot"]


def test_connect_salesforce_says_exactly_which_custom_fields_to_add(runtime, workspace, monkeypatch):
    without_hub_fields = [f for f in salesforce_fake.DESCRIBE_FIELDS["Lead"] if not f["name"].startswith("Hub_")]
    monkeypatch.setitem(salesforce_fake.DESCRIBE_FIELDS, "Lead", without_hub_fields)
    salesforce = SalesforceFake()
    with serve(salesforce) as sf:
        result = CliRunner().invoke(hub_cli, [
            "connect", "salesforce", "--workspace", workspace["workspace_id"], "--instance-url", sf.url,
            "--access-token", next(iter(salesforce.tokens)), "--org-id", salesforce_fake.ORG_ID])

    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[2:6] == [
        "salesforce: missing Lead.Hub_Score__c, Lead.Hub_Grade__c, Lead.Hub_Score_Reasons__c",
        "  add Hub_Score__c: Number(5, 1), label 'Hub score' on Lead",
        "  add Hub_Grade__c: Text(2), label 'Hub grade' on Lead",
        "  add Hub_Score_Reasons__c: Text(255), label 'Hub score reasons' on Lead"]
    assert connection_kinds(runtime, workspace) == ["salesforce"]
    assert salesforce_violations(salesforce.requests) == []


def test_connect_salesforce_with_every_field_present_says_ok(runtime, workspace):
    salesforce = SalesforceFake()
    with serve(salesforce) as sf:
        result = CliRunner().invoke(hub_cli, [
            "connect", "salesforce", "--workspace", workspace["workspace_id"], "--instance-url", sf.url,
            "--access-token", next(iter(salesforce.tokens))])

    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "salesforce: ok"
    assert [r.path.rsplit("/", 2)[-2] for r in salesforce.api_requests()] == ["Lead", "Contact"]
