"""HubSpot connector against the loopback HubSpot fake and HubSpot's documented answers.

Every request a test sends is checked at the end against the documented endpoints, limits and the
hubspot-api-client request models (hub/sandbox/validation.py): 0 violations.
"""
from __future__ import annotations

import json
import threading
import time

import pytest
from pytest_httpserver import HTTPServer
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from hub import defaults
from hub.connectors.base import CrmRecord, TaskSpec
from hub.connectors.hubspot import HubSpotConnector
from hub.exceptions import FatalError, RetriableError
from hub.sync.ratelimit import Rate, TokenBucket
from hub.sync.tokens import StaticTokens
from tests.conftest import fixture_json
from hub.sandbox.hubspot_fake import APP_ID, HubSpotFake
from hub.sandbox.server import serve
from hub.sandbox.validation import hubspot_violations

TOKEN = "hub-initial-access-token"


class ListRecorder:
    def __init__(self):
        self.rows = []

    def record(self, **row):
        self.rows.append(row)


@pytest.fixture
def fake():
    hubspot = HubSpotFake()
    with serve(hubspot):
        yield hubspot
    assert hubspot_violations(hubspot.requests) == []


def make(fake, **kwargs) -> HubSpotConnector:
    sleeps = kwargs.pop("sleeps", [])
    return HubSpotConnector(StaticTokens(TOKEN), api_base=fake.base_url, sleep=sleeps.append, **kwargs)


def contact(email: str, **properties) -> CrmRecord:
    return CrmRecord("contact", None, {"email": email, **properties})


def test_batch_upsert_sends_100_per_call_and_one_bad_record_fails_alone(fake):
    records = [contact(f"p{i}@example.com", firstname=f"P{i}") for i in range(230)]
    records.insert(57, contact("bad@example.com", lifecyclestage="not-a-stage"))
    results = make(fake).batch_upsert(records)
    failed = [r for r in results if not r.ok]
    assert [(r.key, r.error_code) for r in failed] == [("bad@example.com", "VALIDATION_ERROR")]
    assert "INVALID_OPTION" in failed[0].error_message
    assert sum(r.ok and r.created for r in results) == 230
    upserts = [r for r in fake.requests if r.path.endswith("/batch/upsert")]
    assert [len(r.json()["inputs"]) for r in upserts] == [100, 100, 31]
    assert fake.contact_by_email("p229@example.com")["values"]["firstname"] == "P229"
    assert fake.contact_by_email("bad@example.com") is None


def test_batch_upsert_updates_existing_contacts_and_coalesces_repeated_emails(fake):
    connector = make(fake)
    connector.batch_upsert([contact("Jane@Example.com", firstname="Jane")])
    results = connector.batch_upsert([contact("jane@example.com", lastname="Doe"),
                                      contact("JANE@example.com", jobtitle="CTO")])
    assert [(r.key, r.ok, r.created) for r in results] == [("jane@example.com", True, False)]
    values = fake.contact_by_email("jane@example.com")["values"]
    assert {k: values.get(k) for k in ("email", "firstname", "lastname", "jobtitle")} == {
        "email": "jane@example.com", "firstname": "Jane", "lastname": "Doe", "jobtitle": "CTO"}
    assert len(fake.contacts) == 1


def test_whole_batch_refusal_is_split_until_the_bad_record_fails_alone():
    hubspot = HubSpotFake(strict_batches=True)
    with serve(hubspot):
        records = [contact(f"p{i}@example.com") for i in range(8)]
        records[5] = contact("p5@example.com", no_such_property="x")
        results = make(hubspot).batch_upsert(records)
    assert [r.key for r in results if not r.ok] == ["p5@example.com"]
    assert len(hubspot.contacts) == 7
    assert hubspot_violations(hubspot.requests) == []


def test_multi_status_answer_in_hubspots_documented_format_maps_errors_back_by_context_ids():
    sample = fixture_json("hubspot/batch-upsert-207-multi-status.json")
    with HTTPServer() as server:
        server.expect_request("/crm/v3/objects/contacts/batch/upsert", method="POST").respond_with_json(
            sample["response"], status=207)
        records = [CrmRecord("contact", None, {"email": item["id"], **item["properties"]})
                   for item in sample["request"]["inputs"]]
        connector = HubSpotConnector(StaticTokens(TOKEN), api_base=server.url_for("").rstrip("/"))
        results = connector.batch_upsert(records)
        captured = json.loads(server.log[0][0].get_data())
    assert [(r.key, r.ok, r.id, r.error_code) for r in results] == [
        ("jane.doe@example.com", True, "1246965", None), ("r.roe@example.org", False, None, "VALIDATION_ERROR")]
    assert captured == {"inputs": sample["request"]["inputs"]}


def test_find_by_email_reads_in_batches_of_100_and_never_searches(fake):
    connector = make(fake)
    connector.batch_upsert([contact(f"p{i}@example.com", firstname=f"P{i}") for i in range(150)])
    fake.requests.clear()
    found = connector.find_by_email([f"P{i}@example.com" for i in range(150)] + ["nobody@example.com"])
    assert len(found) == 150 and "nobody@example.com" not in found
    assert found["p7@example.com"].properties["firstname"] == "P7"
    assert [r.path for r in fake.requests] == ["/crm/v3/objects/contacts/batch/read"] * 2
    assert all(r.json()["idProperty"] == "email" for r in fake.requests)


def test_read_changes_pages_by_lastmodifieddate_with_per_property_times(fake):
    connector = make(fake)
    connector.batch_upsert([contact(f"p{i}@example.com", firstname=f"P{i}") for i in range(130)])
    fake.ui_edit("p3@example.com", {"jobtitle": "Head of Growth"})
    first = connector.read_changes(None)
    assert len(first.records) == defaults.HUBSPOT_SEARCH_PAGE_SIZE and first.has_more
    second = connector.read_changes(first.cursor)
    assert len(second.records) == 30 and not second.has_more
    seen = {r.properties["email"] for r in first.records + second.records}
    assert len(seen) == 130
    edited = next(r for r in first.records + second.records if r.properties["email"] == "p3@example.com")
    assert edited.field_sources["jobtitle"] == "CRM_UI:userId:4567890"
    assert edited.field_sources["firstname"] == f"INTEGRATION:{APP_ID}"
    assert edited.field_times["jobtitle"] >= edited.field_times["firstname"]
    searches = [r.json() for r in fake.requests if r.path.endswith("/search")]
    assert searches[0]["filterGroups"][0]["filters"][0] == {"propertyName": "lastmodifieddate", "operator": "GTE",
                                                            "value": "0"}
    assert searches[1]["after"] == "100"


def test_read_changes_cursor_comes_back_to_the_lookback_window_when_caught_up(fake):
    now = time.time()
    connector = make(fake, clock=lambda: now + 3600)
    connector.batch_upsert([contact("a@example.com")])
    page = connector.read_changes(None)
    since = json.loads(page.cursor)["since"]
    assert not page.has_more
    assert since == int(page.records[0].updated_at.timestamp() * 1000)   # older than the lookback: exact
    assert connector.read_changes(page.cursor).records[0].properties["email"] == "a@example.com"   # GTE re-reads


def test_iter_all_walks_the_list_api_with_the_after_cursor(fake):
    connector = make(fake)
    connector.batch_upsert([contact(f"p{i}@example.com") for i in range(120)])
    pages = list(connector.iter_all())
    assert [len(p.records) for p in pages] == [50, 50, 20]
    assert pages[-1].cursor is None and pages[0].cursor is not None
    resumed = list(connector.iter_all(pages[0].cursor))
    assert sum(len(p.records) for p in resumed) == 70
    assert all(p.records[0].field_times for p in pages)


def test_describe_and_ensure_hub_fields_create_the_group_and_properties_once():
    hubspot = HubSpotFake(hub_properties=False)
    with serve(hubspot):
        connector = make(hubspot)
        assert "hub_score" not in connector.describe_fields("contacts")
        assert connector.ensure_hub_fields() == []
        assert hubspot.properties["hub_score"]["type"] == "number"
        assert hubspot.properties["hub_score_reasons"]["groupName"] == "lead_hub"
        creates = len([r for r in hubspot.requests if r.method == "POST"])
        assert connector.ensure_hub_fields() == []
        assert len([r for r in hubspot.requests if r.method == "POST"]) == creates == 4
        described = connector.describe_fields("contacts")
    assert described["lifecyclestage"]["options"][2] == "marketingqualifiedlead"
    assert hubspot_violations(hubspot.requests) == []


def test_create_task_associates_it_with_the_contact(fake):
    connector = make(fake)
    [result] = connector.batch_upsert([contact("jane@example.com")])
    task_id = connector.create_task(TaskSpec(record_id=result.id, subject="Call Jane", body="MQL", owner_id="77"))
    task = fake.tasks[task_id]
    assert task["properties"]["hs_task_subject"] == "Call Jane"
    assert task["associations"] == [{"to": {"id": result.id}, "types": [
        {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 204}]}]
    with pytest.raises(FatalError) as refused:
        connector.create_task(TaskSpec(record_id="999", subject="nobody"))
    assert refused.value.code == "VALIDATION_ERROR" and refused.value.status == 400


def test_429_and_5xx_are_retried_honouring_retry_after(fake):
    sleeps: list[float] = []
    recorder = ListRecorder()
    connector = make(fake, sleeps=sleeps, recorder=recorder)
    fake.faults.fail_next(429, retry_after=2)
    fake.faults.fail_next(503, retry_after=1)
    [result] = connector.batch_upsert([contact("jane@example.com")])
    assert result.ok
    assert sleeps == [2.0, 1.0]
    assert [(r["status"], r["http_status"]) for r in recorder.rows] == [("error", 429), ("error", 503), ("ok", 200)]
    assert all(r["request_id"] for r in recorder.rows)


def test_daily_limit_is_not_retried_in_process(fake):
    connector = make(fake)
    fake.faults.fail_next(429, policy="DAILY")
    with pytest.raises(RetriableError) as deferred:
        connector.find_by_email(["jane@example.com"])
    assert deferred.value.retry_after >= defaults.HUBSPOT_DAILY_RETRY_SECONDS
    assert len(fake.requests) == 1


def test_retries_are_bounded(fake):
    sleeps: list[float] = []
    connector = make(fake, sleeps=sleeps)
    fake.faults.fail_next(502, count=10, retry_after=0)
    with pytest.raises(RetriableError):
        connector.find_by_email(["jane@example.com"])
    assert len(fake.requests) == defaults.RETRY_MAX_ATTEMPTS
    assert len(sleeps) == defaults.RETRY_MAX_ATTEMPTS - 1


def test_unauthorised_without_a_refresh_flow_is_fatal(fake):
    connector = HubSpotConnector(StaticTokens("not-a-token"), api_base=fake.base_url)
    with pytest.raises(FatalError) as refused:
        connector.find_by_email(["jane@example.com"])
    assert refused.value.code == "TOKEN_EXPIRED"


def test_a_slow_answer_times_out_as_retriable():
    release = threading.Event()

    def slow(request: Request) -> Response:
        release.wait(2)
        return Response("{}", content_type="application/json")

    with HTTPServer(threaded=True) as server:
        server.expect_request("/crm/v3/objects/contacts/batch/read").respond_with_handler(slow)
        connector = HubSpotConnector(StaticTokens(TOKEN), api_base=server.url_for("").rstrip("/"), timeout=0.2,
                                     sleep=lambda s: None)
        started = time.monotonic()
        with pytest.raises(RetriableError):
            connector.find_by_email(["jane@example.com"])
        elapsed = time.monotonic() - started
        release.set()
    assert elapsed < defaults.RETRY_MAX_ATTEMPTS * 0.2 + 1.5


def test_hub_writes_emit_integration_webhooks_that_verify_with_v3(fake):
    from webhooks import hubspot as receiver

    make(fake).batch_upsert([contact("jane@example.com", firstname="Jane")])
    fake.ui_edit("jane@example.com", {"phone": "+14155550100"})
    [batch] = fake.take_webhook_batches()
    kinds = [(e["subscriptionType"], e.get("propertyName"), e["changeSource"], e["sourceId"]) for e in batch]
    assert kinds == [("contact.creation", None, "INTEGRATION", str(APP_ID)),
                     ("contact.propertyChange", "email", "INTEGRATION", str(APP_ID)),
                     ("contact.propertyChange", "firstname", "INTEGRATION", str(APP_ID)),
                     ("contact.propertyChange", "phone", "CRM_UI", "userId:4567890")]
    url = "https://hooks.example.com/webhooks/hubspot"
    body, headers = fake.signed_delivery(batch, url)
    request = Request(EnvironBuilder(method="POST", path="/webhooks/hubspot", data=body, headers=headers).get_environ())
    receiver.verify(request, fake.app_secret, url)
    assert len(receiver.parse(body)) == 4


def test_shared_bucket_keeps_concurrent_workers_under_the_fakes_rate_limit(runtime):
    hubspot = HubSpotFake(rate=(10, 1.0))
    with serve(hubspot):
        bucket = TokenBucket(runtime.redis(), "hub:rate:hubspot:test", Rate.parse("10/1s"))

        def worker(index: int) -> None:
            connector = make(hubspot, limiter=bucket)
            for n in range(8):
                connector.find_by_email([f"w{index}-{n}@example.com"])

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(hubspot.requests) == 24
    assert hubspot.limiter.refused == 0 and hubspot.limiter.max_in_window <= 10
    assert hubspot_violations(hubspot.requests) == []


def test_the_fakes_rate_limiter_answers_429_when_exceeded():
    hubspot = HubSpotFake(rate=(5, 10.0))
    with serve(hubspot):
        connector = make(hubspot, sleeps=[])
        for n in range(5):
            connector.find_by_email([f"p{n}@example.com"])
        with pytest.raises(RetriableError) as limited:
            HubSpotConnector(StaticTokens(TOKEN), api_base=hubspot.base_url, sleep=lambda s: None).find_by_email(
                ["x@example.com"])
    assert limited.value.status == 429 and limited.value.retry_after == 10.0
    assert hubspot.limiter.refused == defaults.RETRY_MAX_ATTEMPTS


def test_sync_log_rows_are_written_for_every_call(runtime, workspace, fake):
    from sqlalchemy import select

    from hub.db import transaction
    from hub.models import SyncLog
    from hub.sync.synclog import SyncLogRecorder

    recorder = SyncLogRecorder(runtime.engine, workspace["workspace_id"])
    connector = make(fake, recorder=recorder)
    connector.batch_upsert([contact("jane@example.com"), contact("bad@example.com", lifecyclestage="nope")])
    connector.find_by_email(["jane@example.com"])
    with transaction(runtime.engine) as session:
        rows = session.scalars(select(SyncLog).order_by(SyncLog.id)).all()
    assert [(r.target, r.operation, r.status, r.http_status) for r in rows] == [
        ("hubspot", "contacts.batch_upsert", "partial", 207), ("hubspot", "contacts.batch_read", "ok", 200)]
    assert all(r.request_id and r.latency_ms > 0 for r in rows)
    answered = [r.response_headers["X-HubSpot-Correlation-Id"] for r in fake.requests]
    assert [r.request_id for r in rows] == answered


def test_the_validator_flags_requests_outside_the_documented_limits_and_models():
    from hub.sandbox.common import CapturedRequest

    def upsert(body) -> CapturedRequest:
        return CapturedRequest("POST", "/crm/v3/objects/contacts/batch/upsert", {},
                               {"Authorization": "Bearer t"}, json.dumps(body).encode())

    good = {"inputs": [{"idProperty": "email", "id": "a@example.com", "properties": {"firstname": "A"}}]}
    assert hubspot_violations([upsert(good)]) == []
    too_many = {"inputs": [{"idProperty": "email", "id": f"p{i}@example.com", "properties": {}} for i in range(101)]}
    wrong_id = {"inputs": [{"idProperty": "hs_object_id", "id": "123", "properties": {}}]}
    unknown_key = {"inputs": [{"idProperty": "email", "id": "a@example.com", "properties": {}, "email": "x"}]}
    not_strings = {"inputs": [{"idProperty": "email", "id": "a@example.com", "properties": {"hub_score": 42}}]}
    missing_inputs = {"input": []}
    for body in (too_many, wrong_id, unknown_key, not_strings, missing_inputs):
        assert hubspot_violations([upsert(body)]) != [], body
    stray = CapturedRequest("GET", "/crm/v3/objects/contacts/123", {}, {"Authorization": "Bearer t"}, b"")
    assert "not an endpoint" in hubspot_violations([stray])[0]
