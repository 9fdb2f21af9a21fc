"""Salesforce connector against the loopback org fake and Salesforce's documented REST answers.

Every request a test sends is checked against the documented REST formats
(hub/sandbox/validation.py): 0 violations.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import responses

from hub import defaults
from hub.connectors import salesforce as salesforce_module
from hub.connectors.base import CrmRecord, TaskSpec
from hub.connectors.salesforce import SalesforceConnector
from hub.exceptions import FatalError, RetriableError
from hub.sync.ratelimit import ApiReserve
from hub.sync.tokens import StaticTokens
from tests.conftest import fixture_bytes, fixture_json
from hub.sandbox.common import FakeClock
from hub.sandbox.salesforce_fake import HUMAN_USER, INTEGRATION_USER, SalesforceFake, sf_datetime
from hub.sandbox.server import serve
from hub.sandbox.validation import collection_violations, salesforce_violations

TOKEN = "00D5g000004ABCD!initial-access-token"
INSTANCE = "https://example-dev-ed.my.salesforce.com"
API = f"{INSTANCE}/services/data/v60.0"
T0 = datetime(2026, 11, 25, 18, 4, 11, tzinfo=timezone.utc).timestamp()


@pytest.fixture
def fake():
    org = SalesforceFake()
    with serve(org):
        yield org
    assert salesforce_violations(org.requests) == []


def make(org, **kwargs) -> SalesforceConnector:
    sleeps = kwargs.pop("sleeps", [])
    return SalesforceConnector(StaticTokens(TOKEN, instance_url=org.base_url), sleep=sleeps.append, **kwargs)


def lead(email: str, **fields) -> CrmRecord:
    return CrmRecord("Lead", None, {"Email": email, **fields})


def queries(org) -> list[str]:
    return [r.query["q"][0] for r in org.requests if "q" in r.query]


def test_upsert_creates_leads_200_per_call_and_one_bad_record_fails_alone(fake):
    records = [lead(f"p{i}@example.com", FirstName=f"P{i}", LastName=f"L{i}", Company="Acme") for i in range(420)]
    records.insert(33, lead("long@example.com", Title="x" * 200))
    results = make(fake).batch_upsert(records)
    assert [(r.key, r.error_code) for r in results if not r.ok] == [("long@example.com", "STRING_TOO_LONG")]
    assert [r.key for r in results] == [r.properties["Email"] for r in records]      # input order
    assert all(r.created and r.object_type == "Lead" for r in results if r.ok)
    creates = [r.json() for r in fake.requests if r.method == "POST" and r.path.endswith("/composite/sobjects")]
    assert [len(c["records"]) for c in creates] == [200, 200, 21]
    assert all(c["allOrNone"] is False for c in creates)
    lookups = queries(fake)
    assert len(lookups) == 6 and all(" WHERE Email IN (" in q for q in lookups)   # 421 emails, 200 per query
    assert len(fake.records["Lead"]) == 420


def test_upsert_twice_updates_and_never_duplicates(fake):
    connector = make(fake)
    connector.batch_upsert([lead(f"p{i}@example.com", LastName="Old", Company="Acme") for i in range(5)])
    results = connector.batch_upsert([lead(f"P{i}@Example.com", LastName="New") for i in range(5)])
    assert all(r.ok and not r.created for r in results)
    assert len(fake.records["Lead"]) == 5
    assert {r["LastName"] for r in fake.records["Lead"].values()} == {"New"}
    patch = [r.json() for r in fake.requests if r.method == "PATCH"][0]
    assert all(set(rec) == {"attributes", "id", "Email", "LastName"} for rec in patch["records"])


def test_blank_required_lead_fields_get_the_placeholder(fake):
    connector = make(fake)
    [created] = connector.batch_upsert([lead("anon@example.com", FirstName="Ann", LastName="", Company=None)])
    record = fake.records["Lead"][created.id]
    assert (record["LastName"], record["Company"]) == (defaults.PLACEHOLDER, defaults.PLACEHOLDER)
    connector.batch_upsert([lead("anon@example.com", Company="")])
    assert fake.records["Lead"][created.id]["Company"] == defaults.PLACEHOLDER


def test_a_converted_lead_is_written_to_its_contact(fake):
    connector = make(fake)
    [created] = connector.batch_upsert([lead("jane@example.com", LastName="Doe", Company="Acme")])
    contact_id = fake.convert_lead(created.id)
    [result] = connector.batch_upsert([lead("jane@example.com", Title="CTO", City="Paris", Company="Globex",
                                            Status="Working - Contacted")])
    assert (result.ok, result.object_type, result.id) == (True, "Contact", contact_id)
    contact = fake.records["Contact"][contact_id]
    assert (contact["Title"], contact["MailingCity"]) == ("CTO", "Paris")
    assert fake.records["Lead"][created.id]["Title"] is None            # the converted Lead is left alone
    assert len(fake.records["Contact"]) == 1 and len(fake.records["Lead"]) == 1
    found = connector.find_by_email(["JANE@example.com"])
    assert found["jane@example.com"].object_type == "Contact"
    assert found["jane@example.com"].properties["Account.Name"] == "Acme"


def test_updates_by_id_and_by_email_mix_in_one_call(fake):
    connector = make(fake)
    [first, second] = connector.batch_upsert([lead("a@example.com", LastName="A", Company="X"),
                                              lead("b@example.com", LastName="B", Company="X")])
    results = connector.batch_upsert([CrmRecord("Lead", first.id, {"Title": "VP"}), lead("b@example.com", Title="CEO")])
    assert [(r.key, r.id, r.ok) for r in results] == [(first.id, first.id, True), ("b@example.com", second.id, True)]
    assert len([r for r in fake.requests if r.method == "PATCH"]) == 1


def test_a_duplicate_created_meanwhile_is_updated_instead(fake):
    fake.block_duplicates = True
    connector = make(fake)

    def someone_creates_jane_first(request):
        if request.method == "POST" and request.path.endswith("/composite/sobjects") and not fake.find("Lead", "jane@example.com"):
            fake.ui_edit("Lead", None, {"Email": "jane@example.com", "LastName": "Doe", "Company": "Acme"})

    fake.before_dispatch = someone_creates_jane_first
    [result] = connector.batch_upsert([lead("jane@example.com", Title="CTO")])
    assert result.ok and not result.created
    [jane] = fake.find("Lead", "jane@example.com")
    assert (jane["Id"], jane["Title"]) == (result.id, "CTO")


def test_collections_answers_in_the_documented_format_map_per_record():
    create_request = fixture_json("salesforce-rest/composite-sobjects-create__request.json")
    with responses.RequestsMock() as mocked:
        mocked.get(f"{API}/query/", json={"totalSize": 0, "done": True, "records": []},
                   headers={"Sforce-Limit-Info": "api-usage=18/5000"})
        mocked.post(f"{API}/composite/sobjects",
                    body=fixture_bytes("salesforce-rest/composite-sobjects-create__partial-error.json"),
                    content_type="application/json;charset=UTF-8")
        connector = SalesforceConnector(StaticTokens(TOKEN, instance_url=INSTANCE))
        records = [CrmRecord("Lead", None, {k: v for k, v in r.items() if k != "attributes"})
                   for r in create_request["records"]]
        results = connector.batch_upsert(records)
        [sent] = [json.loads(c.request.body) for c in mocked.calls if c.request.method == "POST"]
        lookups = [c for c in mocked.calls if c.request.method == "GET"]
    assert [(r.key, r.ok, r.id, r.error_code) for r in results] == [
        ("jane.doe@example.com", True, "00Q5g00000Lq1aDEAR", None),
        ("r.roe@example.org", False, None, "DUPLICATES_DETECTED")]
    assert sent == create_request
    assert len(lookups) == 4          # Lead + Contact by email, then again for the duplicate (not found)


def test_read_changes_uses_systemmodstamp_and_id_so_ties_are_never_lost():
    clock = FakeClock(start=T0)
    org = SalesforceFake(clock=clock, page_size=2)
    with serve(org):
        for i in range(5):
            org.ui_edit("Lead", None, {"Email": f"p{i}@example.com", "LastName": f"L{i}", "Company": "X"})
        later = lambda: datetime.fromtimestamp(clock.now(), timezone.utc) + timedelta(hours=1)  # noqa: E731
        connector = make(org, clock=later)
        old_max_pages = defaults.CHANGES_MAX_PAGES
        defaults.CHANGES_MAX_PAGES = 1
        try:
            pages = [connector.read_changes(None)]
            while pages[-1].has_more:
                pages.append(connector.read_changes(pages[-1].cursor))
        finally:
            defaults.CHANGES_MAX_PAGES = old_max_pages
        seen = [r.properties["Email"] for p in pages for r in p.records if r.object_type == "Lead"]
        assert seen == [f"p{i}@example.com" for i in range(5)]       # all five share one SystemModstamp
        clock.advance(1)
        org.ui_edit("Lead", org.find("Lead", "p2@example.com")[0]["Id"], {"Title": "CTO"})
        page = connector.read_changes(pages[-1].cursor)
        assert [(r.properties["Email"], r.modified_by) for r in page.records] == [("p2@example.com", HUMAN_USER)]
        assert page.records[0].updated_at == datetime.fromtimestamp(int(clock.now()), timezone.utc)
        soql = queries(org)[0]
        assert "ORDER BY SystemModstamp, Id" in soql and "SystemModstamp > 1970-01-01T00:00:00Z" in soql
        tie = [q for q in queries(org) if "Id > '" in q][0]
        assert "(SystemModstamp = 2026-11-25T18:04:11Z AND Id > '" in tie
    assert salesforce_violations(org.requests) == []


def test_read_changes_follows_next_records_url_and_keeps_a_lookback_window():
    clock = FakeClock(start=T0)
    org = SalesforceFake(clock=clock, page_size=3)
    with serve(org):
        for i in range(7):
            org.ui_edit("Lead", None, {"Email": f"p{i}@example.com", "LastName": "L", "Company": "X"})
            clock.advance(1)
        now = lambda: datetime.fromtimestamp(clock.now(), timezone.utc)  # noqa: E731
        connector = make(org, clock=now)
        page = connector.read_changes(None)
        assert len(page.records) == 7 and not page.has_more
        assert len([r for r in org.requests if "/query/01g" in r.path]) == 2     # nextRecordsUrl followed
        cursor = json.loads(page.cursor)["Lead"]
        back = now() - timedelta(seconds=defaults.CHANGES_LOOKBACK_SECONDS)
        assert cursor == {"t": salesforce_module.format_sf_datetime(back), "id": ""}
        clock.advance(defaults.CHANGES_LOOKBACK_SECONDS + 60)
        assert connector.read_changes(page.cursor).records != []                  # re-read once, inside the window
    assert salesforce_violations(org.requests) == []


def test_iter_all_backfills_leads_and_contacts_following_next_records_url():
    org = SalesforceFake(page_size=50)
    with serve(org):
        for i in range(120):
            org.ui_edit("Lead", None, {"Email": f"p{i}@example.com", "LastName": "L", "Company": "X"})
        org.convert_lead(org.find("Lead", "p0@example.com")[0]["Id"])
        pages = list(make(org).iter_all())
        assert sum(len(p.records) for p in pages) == 121
        assert pages[-1].cursor is None
        resumed = list(make(org).iter_all(pages[1].cursor))
        assert sum(len(p.records) for p in resumed) == 121 - 100
    assert salesforce_violations(org.requests) == []


def test_describe_reports_lengths_and_picklists_from_the_documented_excerpt():
    with responses.RequestsMock() as mocked:
        mocked.get(f"{API}/sobjects/Lead/describe", body=fixture_bytes("salesforce-rest/describe-lead__excerpt.json"),
                   content_type="application/json")
        fields = SalesforceConnector(StaticTokens(TOKEN, instance_url=INSTANCE)).describe_fields("Lead")
    assert fields["Company"]["length"] == 255 and fields["FirstName"]["length"] == 40
    assert fields["Status"]["picklist"][:2] == ["Open - Not Contacted", "Working - Contacted"]


def test_ensure_hub_fields_reports_the_custom_fields_an_admin_must_create(fake):
    assert make(fake).ensure_hub_fields() == []
    with responses.RequestsMock() as mocked:
        for name in ("Lead", "Contact"):
            mocked.get(f"{API}/sobjects/{name}/describe",
                       body=fixture_bytes("salesforce-rest/describe-lead__excerpt.json"), content_type="application/json")
        missing = SalesforceConnector(StaticTokens(TOKEN, instance_url=INSTANCE)).ensure_hub_fields()
    assert missing[:3] == ["Lead.Hub_Score__c", "Lead.Hub_Grade__c", "Lead.Hub_Score_Reasons__c"]


def test_create_task_with_whoid(fake):
    connector = make(fake)
    [created] = connector.batch_upsert([lead("jane@example.com", LastName="Doe", Company="Acme")])
    due = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)
    task_id = connector.create_task(TaskSpec(record_id=created.id, subject="Call Jane", body="MQL", due_at=due))
    task = fake.records["Task"][task_id]
    assert (task["WhoId"], task["ActivityDate"], task["Priority"], task["Status"]) == (
        created.id, "2026-11-27", "High", "Not Started")
    with pytest.raises(FatalError) as refused:
        connector.create_task(TaskSpec(record_id="00Q5g0000009999AAA", subject="nobody"))
    assert refused.value.code == "INVALID_CROSS_REFERENCE_KEY"


def test_api_usage_is_kept_and_the_reserve_is_never_spent(runtime, fake):
    fake.api_limit, fake.api_used = 1000, 895
    reserve = ApiReserve(runtime.redis(), "org-test", 0.10)
    connector = make(fake, reserve=reserve)
    for n in range(5):
        connector.describe_fields("Lead")
    assert reserve.usage() == (900, 1000)
    sent = len(fake.requests)
    with pytest.raises(RetriableError) as refused:
        connector.describe_fields("Lead")
    assert refused.value.retry_after == defaults.SALESFORCE_RESERVE_RETRY_SECONDS
    assert len(fake.requests) == sent                      # refused before calling


def test_request_limit_exceeded_is_a_403_retried_only_much_later():
    with responses.RequestsMock() as mocked:
        mocked.get(f"{API}/sobjects/Lead/describe", status=403,
                   body=fixture_bytes("salesforce-rest/error__request-limit-exceeded-403.json"),
                   content_type="application/json", headers={"Sforce-Limit-Info": "api-usage=5000/5000"})
        with pytest.raises(RetriableError) as limited:
            SalesforceConnector(StaticTokens(TOKEN, instance_url=INSTANCE)).describe_fields("Lead")
        assert len(mocked.calls) == 1
    assert limited.value.retry_after == defaults.SALESFORCE_RESERVE_RETRY_SECONDS and limited.value.status == 403


def test_unavailable_is_retried_honouring_retry_after(fake):
    sleeps: list[float] = []
    fake.faults.fail_next(503, count=2, retry_after=3)
    assert "Company" in make(fake, sleeps=sleeps).describe_fields("Lead")
    assert sleeps == [3.0, 3.0]


def test_validation_errors_are_fatal_with_the_vendor_code():
    with responses.RequestsMock() as mocked:
        mocked.get(f"{API}/query/", status=400, content_type="application/json",
                   json=[{"message": "No such column 'Foo' on entity 'Lead'", "errorCode": "INVALID_FIELD"}])
        with pytest.raises(FatalError) as refused:
            SalesforceConnector(StaticTokens(TOKEN, instance_url=INSTANCE), sleep=lambda s: None).read_changes(None)
        assert len(mocked.calls) == 1
    assert (refused.value.code, refused.value.status) == ("INVALID_FIELD", 400)


def test_api_writes_carry_the_integration_user_in_outbound_messages(fake):
    from webhooks import salesforce as receiver

    [created] = make(fake).batch_upsert([lead("jane@example.com", LastName="Doe", Company="Acme & Co")])
    fake.ui_edit("Lead", created.id, {"Title": "VP Marketing"})
    [body] = fake.take_outbound_messages("Lead")
    events = receiver.parse(body)
    assert len(events) == 1                                  # same record twice -> one current snapshot
    assert INTEGRATION_USER != HUMAN_USER
    text = body.decode()
    assert f"<sf:LastModifiedById>{HUMAN_USER}</sf:LastModifiedById>" in text
    assert "<sf:Company>Acme &amp; Co</sf:Company>" in text
    assert fake.take_outbound_messages("Lead") == []
    make(fake).batch_upsert([lead("jane@example.com", Phone="+14155550100")])
    [body] = fake.take_outbound_messages("Lead")
    assert f"<sf:LastModifiedById>{INTEGRATION_USER}</sf:LastModifiedById>" in body.decode()


def test_the_validator_accepts_the_documented_samples_and_rejects_broken_ones():
    create = fixture_json("salesforce-rest/composite-sobjects-create__request.json")
    update = fixture_json("salesforce-rest/composite-sobjects-update__request.json")
    assert collection_violations(create, "POST") == []
    assert collection_violations(update, "PATCH") == []
    assert collection_violations(update, "POST") != []                       # ids in a create
    too_many = {"allOrNone": False, "records": create["records"] * 101}
    assert any("1..200" in p for p in collection_violations(too_many, "POST"))
    untyped = {"allOrNone": False, "records": [{"LastName": "Doe"}]}
    assert collection_violations(untyped, "POST") != []


def test_datetimes_use_the_plus_0000_offset():
    assert sf_datetime(T0) == "2026-11-25T18:04:11.000+0000"
    parsed = salesforce_module.parse_sf_datetime("2026-11-25T18:04:11.000+0000")
    assert salesforce_module.format_sf_datetime(parsed) == "2026-11-25T18:04:11.000+0000"
    assert salesforce_module.soql_datetime("2026-11-25T18:04:11.000+0000") == "2026-11-25T18:04:11Z"


def test_registry_builds_a_logged_connector_and_refuses_missing_connections(runtime, workspace, fake):
    from sqlalchemy import select

    from hub.connectors import registry
    from hub.db import transaction
    from hub.models import SyncLog
    from hub.sandbox.wiring import connect_salesforce_fake

    with pytest.raises(FatalError) as missing:
        registry.connector_for(runtime, workspace["workspace_id"], "salesforce")
    assert missing.value.code == "NOT_CONNECTED"
    connect_salesforce_fake(runtime, workspace["workspace_id"], fake)
    connector = registry.connector_for(runtime, workspace["workspace_id"], "salesforce")
    results = connector.batch_upsert([lead("a@example.com", LastName="A", Company="X"),
                                      lead("b@example.com", LastName="B", Company="X", Title="t" * 300)])
    with transaction(runtime.engine) as session:
        rows = session.scalars(select(SyncLog).order_by(SyncLog.id)).all()
    assert [(r.operation, r.status, r.http_status) for r in rows] == [
        ("sobjects.describe", "ok", 200), ("query", "ok", 200), ("sobjects.describe", "ok", 200),
        ("query", "ok", 200), ("sobjects.create", "partial", 200)]
    assert rows[-1].object_ids == [results[0].id]
    assert all(r.request_id.startswith("leadhub:") and r.workspace_id == workspace["workspace_id"] for r in rows)
    with pytest.raises(FatalError) as unknown:
        registry.connector_for(runtime, workspace["workspace_id"], "pipedrive")
    assert unknown.value.code == "UNKNOWN_KIND"


def test_registry_refuses_stored_credentials_without_an_access_token(runtime, workspace):
    from hub import admin
    from hub.connectors import registry

    admin.connect(runtime, workspace["workspace_id"], "salesforce", "00D5g000004ABCDEA2", {"refresh_token": "r"},
                  {"instance_url": "https://example-dev-ed.my.salesforce.com"})
    with pytest.raises(FatalError) as refused:
        registry.connector_for(runtime, workspace["workspace_id"], "salesforce")
    assert refused.value.code == "BAD_CREDENTIALS" and "access_token" in str(refused.value)
    assert "'r'" not in str(refused.value)


def test_a_create_that_failed_after_it_was_applied_is_not_created_twice(fake):
    sleeps: list[float] = []
    connector = make(fake, sleeps=sleeps)
    armed: list[bool] = []

    def fail_the_first_create_after_applying_it(request):
        if request.method == "POST" and request.path.endswith("/composite/sobjects") and not armed:
            armed.append(True)
            fake.faults.fail_next(503, retry_after=1, after=True)

    fake.before_dispatch = fail_the_first_create_after_applying_it
    results = connector.batch_upsert([lead(f"n{i}@example.com", LastName="N", Company="X") for i in range(3)])
    assert [(r.key, r.ok, r.created) for r in results] == [(f"n{i}@example.com", True, True) for i in range(3)]
    assert len(fake.records["Lead"]) == 3
    assert sleeps == [1.0]
    writes = [(r.method, r.status) for r in fake.api_requests() if r.path.endswith("/composite/sobjects")]
    assert writes == [("POST", 503), ("PATCH", 200)]


def test_fields_the_org_lacks_are_left_out_and_its_describe_is_reused(runtime, workspace):
    from hub.connectors import registry
    from hub.sandbox.wiring import connect_salesforce_fake

    org = SalesforceFake(hub_fields=False)
    with serve(org):
        connect_salesforce_fake(runtime, workspace["workspace_id"], org)
        connector = registry.connector_for(runtime, workspace["workspace_id"], "salesforce")
        [result] = connector.batch_upsert([lead("jane@example.com", LastName="Doe", Company="Acme", Hub_Score__c=42,
                                                Hub_Grade__c="A")])
        assert result.ok and org.records["Lead"][result.id]["LastName"] == "Doe"
        assert "Hub_Score__c" not in org.records["Lead"][result.id]
        assert all("Hub_" not in q for q in queries(org))
        describes = len([r for r in org.requests if r.path.endswith("/describe")])
        again = registry.connector_for(runtime, workspace["workspace_id"], "salesforce")
        again.read_changes(None)
        assert len([r for r in org.requests if r.path.endswith("/describe")]) == describes == 2
    assert salesforce_violations(org.requests) == []

    full_org = SalesforceFake()
    with serve(full_org):
        connect_salesforce_fake(runtime, workspace["workspace_id"], full_org)
        runtime.redis().delete("hub:sf-describe:00D5g000004ABCDEA2:Lead", "hub:sf-describe:00D5g000004ABCDEA2:Contact")
        connector = registry.connector_for(runtime, workspace["workspace_id"], "salesforce")
        [result] = connector.batch_upsert([lead("jane@example.com", LastName="Doe", Company="Acme", Hub_Score__c=42)])
        assert connector.read_by_ids("Lead", [result.id])[result.id].properties["Hub_Score__c"] == 42
