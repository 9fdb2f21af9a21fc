"""The push engine against small in-memory CRM doubles (the loopback fakes are used by the simulation).

The doubles implement the CrmConnector interface with the vendors' shapes of outcome: HubSpot
upserts by email, Salesforce creates without an id and updates with one; one bad record fails
alone with the vendor's error code.
"""
from __future__ import annotations

import itertools
import json
from datetime import timedelta

import pytest
from sqlalchemy import delete, func, select

from hub.connectors.base import CrmConnector, CrmRecord, WriteResult
from hub.db import transaction
from hub.exceptions import RetriableError
from hub.models import Connection, Contact, EchoLedger, Identity, Outbox, PendingPush, SyncLog, utcnow
from hub.sync import echo, push, relay
from tests.conftest import run_pipeline

_ids = itertools.count(1)


class MemoryCrm(CrmConnector):
    def __init__(self, kind: str, batch_size: int):
        self.kind = kind
        self.batch_size = batch_size
        self.records: dict[str, dict] = {}
        self.calls: list[tuple[str, int]] = []
        self.bad_values: dict[str, tuple[str, str]] = {}   # value -> (code, message)
        self.outage = False

    def _fail(self, props):
        for value in props.values():
            if value in self.bad_values:
                return self.bad_values[value]
        return None

    def batch_upsert(self, records):
        assert len(records) <= self.batch_size
        self.calls.append(("batch_upsert", len(records)))
        if self.outage:
            raise RetriableError("503 from the vendor", retry_after=1, status=503)
        results = []
        for record in records:
            key = record.properties.get("email") if self.kind == "hubspot" else record.id
            failure = self._fail(record.properties)
            if failure:
                results.append(WriteResult(key=key or "", id=None, ok=False, error_code=failure[0],
                                           error_message=failure[1]))
                continue
            object_id = self._find(record) or f"{self.kind[:2]}{next(_ids)}"
            created = object_id not in self.records
            self.records.setdefault(object_id, {}).update(record.properties)
            results.append(WriteResult(key=key or object_id, id=object_id, ok=True, created=created,
                                       object_type=record.object_type))
        return results

    def _find(self, record):
        if self.kind == "salesforce":
            return record.id
        email = record.properties.get("email")
        return next((i for i, r in self.records.items() if r.get("email") == email), None)

    def find_by_email(self, emails):
        self.calls.append(("find_by_email", len(emails)))
        return {r["Email"]: CrmRecord("Lead", i, dict(r)) for i, r in self.records.items() if r.get("Email") in emails}


@pytest.fixture(autouse=True)
def connections(runtime, workspace):
    from hub import admin

    ws = workspace["workspace_id"]
    admin.connect(runtime, ws, "hubspot", "62515", {"access_token": "t"}, {"app_id": "54321"})
    admin.connect(runtime, ws, "salesforce", "00D5g000004ABCDEA2", {"access_token": "t"},
                  {"instance_url": "http://127.0.0.1:1", "integration_user_id": "0055g00000INTEGRAT"})


@pytest.fixture
def crms():
    return {"hubspot": MemoryCrm("hubspot", 100), "salesforce": MemoryCrm("salesforce", 200)}


def _contacts(runtime, ws, count, **values):
    with transaction(runtime.engine) as session:
        rows = [Contact(workspace_id=ws, email=f"p{i}@example.com", first_name=f"P{i}", last_name="Doe",
                        company="Acme", **values) for i in range(count)]
        session.add_all(rows)
        session.flush()
        return [r.id for r in rows]


def _schedule(runtime, ws, ids, fields, origin="form"):
    with transaction(runtime.engine) as session:
        for contact_id in ids:
            push.schedule_push(session, ws, contact_id, set(fields), origin)
        session.execute(PendingPush.__table__.update().values(due_at=utcnow() - timedelta(seconds=1)))


def _link(runtime, ws, contact_ids, crms):
    with transaction(runtime.engine) as session:
        for n, contact_id in enumerate(contact_ids):
            for system, crm in crms.items():
                object_id = f"{system[:2]}-pre-{n}"
                crm.records[object_id] = {"email": f"p{n}@example.com"} if system == "hubspot" else {}
                session.add(Identity(workspace_id=ws, system=system, external_id=object_id, contact_id=contact_id,
                                     object_type="contact" if system == "hubspot" else "Lead"))


def test_schedule_push_coalesces_per_contact(runtime, workspace):
    ws = workspace["workspace_id"]
    [contact_id] = _contacts(runtime, ws, 1)
    with transaction(runtime.engine) as session:
        push.schedule_push(session, ws, contact_id, {"title"}, "hubspot")
        push.schedule_push(session, ws, contact_id, {"city"}, "salesforce")
    with transaction(runtime.engine) as session:
        [row] = session.scalars(select(PendingPush)).all()
        assert (sorted(row.fields), sorted(row.origins), row.generation) == (["city", "title"],
                                                                               ["hubspot", "salesforce"], 2)
        jobs = session.scalars(select(Outbox).where(Outbox.job == "sync_push")).all()
        assert len(jobs) == 1


def test_new_contact_is_created_in_both_crms_with_identities_and_ledger(runtime, workspace, crms):
    ws = workspace["workspace_id"]
    [contact_id] = _contacts(runtime, ws, 1, title="CEO")
    with transaction(runtime.engine) as session:
        session.execute(Contact.__table__.update().values(company=None))
    _schedule(runtime, ws, [contact_id], {"email", "first_name"})
    push.run_pushes(runtime, ws, connectors=crms)
    [hs] = crms["hubspot"].records.values()
    [sf] = crms["salesforce"].records.values()
    assert hs["email"] == "p0@example.com" and hs["jobtitle"] == "CEO"
    assert sf["Email"] == "p0@example.com" and sf["Company"] == "[not provided]" and sf["Title"] == "CEO"
    with transaction(runtime.engine) as session:
        systems = sorted(session.scalars(select(Identity.system).where(Identity.contact_id == contact_id)))
        assert systems == ["hubspot", "salesforce"]
        assert session.scalar(select(PendingPush.id)) is None
        fields = set(session.scalars(select(EchoLedger.field).where(EchoLedger.system == "salesforce")))
        assert {"email", "first_name", "title", "company"} <= fields


def test_change_is_not_written_back_to_the_crm_it_came_from(runtime, workspace, crms):
    ws = workspace["workspace_id"]
    [contact_id] = _contacts(runtime, ws, 1, title="CTO")
    _link(runtime, ws, [contact_id], crms)
    with transaction(runtime.engine) as session:
        echo.remember_values(session, ws, "hubspot", "hu-pre-0", {"title": "CTO"})
    _schedule(runtime, ws, [contact_id], {"title"}, origin="hubspot")
    push.run_pushes(runtime, ws, connectors=crms)
    assert crms["hubspot"].calls == []
    assert crms["salesforce"].records["sa-pre-0"] == {"Title": "CTO"}


def test_writes_are_batched_per_vendor_limit(runtime, workspace, crms):
    ws = workspace["workspace_id"]
    ids = _contacts(runtime, ws, 450)
    _link(runtime, ws, ids, crms)
    _schedule(runtime, ws, ids, {"first_name"})
    push.run_pushes(runtime, ws, connectors=crms)
    assert crms["hubspot"].calls == [("batch_upsert", 100)] * 4 + [("batch_upsert", 50)]
    assert crms["salesforce"].calls == [("batch_upsert", 200)] * 2 + [("batch_upsert", 50)]


def test_unlinked_salesforce_lead_is_found_by_email_not_duplicated(runtime, workspace, crms):
    ws = workspace["workspace_id"]
    [contact_id] = _contacts(runtime, ws, 1)
    crms["salesforce"].records["00Qexisting"] = {"Email": "p0@example.com", "FirstName": "P0", "LastName": "Doe"}
    _schedule(runtime, ws, [contact_id], {"first_name"})
    push.run_pushes(runtime, ws, connectors=crms)
    assert list(crms["salesforce"].records) == ["00Qexisting"]
    with transaction(runtime.engine) as session:
        assert session.scalar(select(Identity.external_id).where(Identity.system == "salesforce")) == "00Qexisting"


def test_bad_record_fails_alone_with_the_vendors_error(runtime, workspace, crms):
    ws = workspace["workspace_id"]
    ids = _contacts(runtime, ws, 3)
    _link(runtime, ws, ids, crms)
    with transaction(runtime.engine) as session:
        session.execute(Contact.__table__.update().where(Contact.id == ids[1]).values(first_name="BAD"))
    crms["salesforce"].bad_values["BAD"] = ("FIELD_CUSTOM_VALIDATION_EXCEPTION", "FirstName: rejected by rule")
    _schedule(runtime, ws, ids, {"first_name"})
    push.run_pushes(runtime, ws, connectors=crms)
    assert crms["salesforce"].records["sa-pre-0"] == {"FirstName": "P0"}
    assert crms["salesforce"].records["sa-pre-2"] == {"FirstName": "P2"}
    with transaction(runtime.engine) as session:
        [log] = session.scalars(select(SyncLog).where(SyncLog.status == "error")).all()
        assert log.target == "salesforce" and log.error.startswith("FIELD_CUSTOM_VALIDATION_EXCEPTION")
        assert session.scalar(select(PendingPush.id)) is None


def test_vendor_outage_keeps_the_push_pending_with_backoff(runtime, workspace, crms):
    ws = workspace["workspace_id"]
    ids = _contacts(runtime, ws, 2)
    _link(runtime, ws, ids, crms)
    crms["salesforce"].outage = True
    _schedule(runtime, ws, ids, {"first_name"})
    push.run_pushes(runtime, ws, connectors=crms)
    with transaction(runtime.engine) as session:
        rows = session.scalars(select(PendingPush)).all()
        assert [r.attempts for r in rows] == [1, 1]
        assert all(r.due_at > utcnow() for r in rows)
    crms["salesforce"].outage = False
    with transaction(runtime.engine) as session:
        session.execute(PendingPush.__table__.update().values(due_at=utcnow() - timedelta(seconds=1)))
    push.run_pushes(runtime, ws, connectors=crms)
    assert crms["salesforce"].records["sa-pre-1"] == {"FirstName": "P1"}


def test_too_long_value_is_truncated_and_logged(runtime, workspace, crms):
    ws = workspace["workspace_id"]
    [contact_id] = _contacts(runtime, ws, 1)
    _link(runtime, ws, [contact_id], crms)
    with transaction(runtime.engine) as session:
        session.execute(Contact.__table__.update().values(first_name="X" * 60))
    _schedule(runtime, ws, [contact_id], {"first_name"})
    push.run_pushes(runtime, ws, connectors=crms)
    assert crms["salesforce"].records["sa-pre-0"]["FirstName"] == "X" * 40
    assert crms["hubspot"].records["hu-pre-0"]["firstname"] == "X" * 60
    with transaction(runtime.engine) as session:
        [log] = session.scalars(select(SyncLog).where(SyncLog.status == "truncated")).all()
        assert log.target == "salesforce" and "FirstName" in log.error


def test_contact_changed_during_the_push_is_pushed_again(runtime, workspace, crms):
    ws = workspace["workspace_id"]
    [contact_id] = _contacts(runtime, ws, 1)
    _link(runtime, ws, [contact_id], crms)
    _schedule(runtime, ws, [contact_id], {"first_name"})
    claimed = push.claim(runtime, ws)
    with transaction(runtime.engine) as session:        # a new edit lands while the push is in flight
        session.execute(Contact.__table__.update().values(first_name="Later"))
        push.schedule_push(session, ws, contact_id, {"first_name"}, "hubspot")
    from hub.sync import engine

    engine.push(runtime, ws, claimed, connectors=crms)
    with transaction(runtime.engine) as session:
        row = session.scalar(select(PendingPush))
        assert row is not None and row.claimed_until is None


def test_nothing_is_scheduled_when_the_origin_is_the_only_crm(runtime, workspace):
    ws = workspace["workspace_id"]
    [contact_id] = _contacts(runtime, ws, 1)
    with transaction(runtime.engine) as session:
        session.execute(Connection.__table__.delete().where(Connection.kind == "salesforce"))
        push.schedule_push(session, ws, contact_id, {"title"}, "hubspot")
        push.schedule_push(session, ws, contact_id, {"title"}, "form")
    with transaction(runtime.engine) as session:
        assert session.scalar(select(PendingPush.fields)) == ["title"]
        assert session.scalar(select(PendingPush.origins)) == ["form"]


def test_relay_sends_sync_rows_to_the_sync_job():
    rows = [(1, "w1", {"event_ids": [1, 2]}, "process_events", 0), (2, "w1", {"workspace_id": "w1"}, "sync_push", 0),
            (3, "w1", {"event_ids": [3]}, "process_events", 0)]
    jobs = relay._group_into_jobs(rows)
    assert sorted(jobs) == [("hub.sync.jobs.process_outbox", "hub", [1, 3]), ("hub.sync.jobs.run_sync_outbox", "hub", [2])]


# --- backfill and polling against the loopback fakes ----------------------------------------------

from hub.sandbox.hubspot_fake import HubSpotFake  # noqa: E402
from hub.sandbox.salesforce_fake import SalesforceFake  # noqa: E402
from hub.sandbox.server import serve  # noqa: E402
from hub.sandbox.wiring import connect_hubspot_fake, connect_salesforce_fake, point_runtime_at  # noqa: E402


class Crash(Exception):
    pass


def _crashing(connector, after_pages: int):
    """The connector's backfill walk, dying after `after_pages` pages (a killed process)."""
    real = connector.iter_all

    def iter_all(cursor=None):
        for n, page in enumerate(real(cursor)):
            if n == after_pages:
                raise Crash()
            yield page
    connector.iter_all = iter_all
    return connector


def test_backfill_pages_everything_and_resumes_after_a_crash(runtime, workspace, monkeypatch):
    from click.testing import CliRunner

    from hub.cli import main as hub_cli
    from hub.connectors import registry
    from hub.models import Event, SyncCursor
    from hub.sync.backfill import backfill

    ws = workspace["workspace_id"]
    with transaction(runtime.engine) as session:     # a HubSpot-only workspace: no unreachable Salesforce to retry
        session.execute(delete(Connection).where(Connection.workspace_id == ws, Connection.kind == "salesforce"))
    fake = HubSpotFake()
    for n in range(250):
        fake.ui_edit(f"b{n}@example.com", {"firstname": f"B{n}"})
    with serve(fake) as server:
        point_runtime_at(runtime, hubspot_url=server.url)
        monkeypatch.setenv("HUBSPOT_API_BASE", server.url)       # the CLI builds its runtime from the env
        connect_hubspot_fake(runtime, ws, fake)
        with pytest.raises(Crash):
            backfill(runtime, ws, "hubspot", _crashing(registry.connector_for(runtime, ws, "hubspot"), 1))
        pages_before = len(fake.api_requests("/crm/v3/objects/contacts"))
        with transaction(runtime.engine) as session:
            first_read = session.scalar(select(func.count()).select_from(Event))
        result = CliRunner().invoke(hub_cli, ["backfill", "hubspot", "--workspace", ws, "--json"])
        assert result.exit_code == 0, result.output
        answer = json.loads(result.stdout.strip().splitlines()[-1])
        pages_after = len(fake.api_requests("/crm/v3/objects/contacts")) - pages_before
        run_pipeline(runtime)             # with the CRM still up: pushes do not wait out retries
    assert 0 < first_read < 250
    assert answer["resumed"] == "true" and answer["read"] == 250 - first_read   # page 1 is not read again
    assert pages_after == -(-(250 - first_read) // first_read)   # the rest, page by page, nothing twice
    with transaction(runtime.engine) as session:
        kinds = session.scalars(select(Event.kind).where(Event.source == "hubspot")).all()
        assert len(kinds) == 250 and set(kinds) == {"contact.snapshot"}
        cursor = session.scalar(select(SyncCursor).where(SyncCursor.name == "backfill"))
        assert cursor.finished_at is not None and cursor.done == 250
    with transaction(runtime.engine) as session:
        assert session.scalar(select(Contact.first_name).where(Contact.email == "b7@example.com")) == "B7"


def test_salesforce_polling_stores_each_change_once(runtime, workspace):
    from hub.models import Event
    from hub.sync.engine import connectors_for
    from hub.sync.polling import poll_once

    ws = workspace["workspace_id"]
    fake = SalesforceFake()
    leads = [fake.ui_edit("Lead", None, {"Email": f"l{n}@example.com", "LastName": f"L{n}", "Company": "Acme"})
             for n in range(3)]
    with serve(fake) as server:
        point_runtime_at(runtime, salesforce_login_url=server.url)
        connect_salesforce_fake(runtime, ws, fake)
        connector = connectors_for(runtime, ws)["salesforce"]
        assert poll_once(runtime, ws, connector) == 3
        assert poll_once(runtime, ws, connector) == 0        # the lookback re-reads; nothing is stored twice
        fake.clock.advance(2)
        fake.ui_edit("Lead", leads[1]["Id"], {"Title": "CFO"})
        assert poll_once(runtime, ws, connector) == 1
    run_pipeline(runtime)
    with transaction(runtime.engine) as session:
        assert session.scalar(select(Contact.title).where(Contact.email == "l1@example.com")) == "CFO"
        assert session.scalar(select(func.count()).select_from(Event)) == 4


def test_polling_job_re_arms_itself(runtime, workspace):
    from hub.sync import polling
    from hub.sync.jobs import run_sync_outbox

    ws = workspace["workspace_id"]
    fake = SalesforceFake()
    with serve(fake) as server:
        point_runtime_at(runtime, salesforce_login_url=server.url)
        connect_salesforce_fake(runtime, ws, fake, poll_interval=30)
        with transaction(runtime.engine) as session:
            polling.arm(session, ws, delay_seconds=0)
            [row_id] = session.scalars(select(Outbox.id).where(Outbox.job == "sync_poll")).all() or [None]
        with transaction(runtime.engine) as session:
            row_id = session.scalar(select(Outbox.id).where(Outbox.job == "sync_poll"))
        run_sync_outbox([row_id])
    with transaction(runtime.engine) as session:
        rows = session.execute(select(Outbox.id, Outbox.done_at, Outbox.available_at)
                               .where(Outbox.job == "sync_poll").order_by(Outbox.id)).all()
    assert rows[0].done_at is not None and rows[1].done_at is None and rows[1].available_at > utcnow()


# --- deletion decisions ----------------------------------------------------------------------------

@pytest.mark.parametrize("policy, decision", [(None, "unlink"), ("propagate", "propagate")])
def test_crm_deletion_is_a_logged_decision(runtime, workspace, policy, decision):
    from hub.models import Workspace
    from hub.store import ingest
    from tests.conftest import fixture_bytes
    from webhooks import hubspot as hubspot_receiver

    ws = workspace["workspace_id"]
    [contact_id] = _contacts(runtime, ws, 1)
    with transaction(runtime.engine) as session:
        session.add_all([Identity(workspace_id=ws, system="hubspot", external_id="1246978", contact_id=contact_id),
                         Identity(workspace_id=ws, system="salesforce", external_id="00Q5g00000Lq1aBEAR",
                                  contact_id=contact_id, object_type="Lead")])
        if policy:
            session.get(Workspace, ws).settings = {"deletions": policy}
    events = hubspot_receiver.parse(fixture_bytes("hubspot/contact.deletion__sample.json"))
    ingest(runtime.engine, [(ws, e) for e in events])
    run_pipeline(runtime)
    with transaction(runtime.engine) as session:
        [log] = session.scalars(select(SyncLog).where(SyncLog.status == "decision")).all()
        systems = set(session.scalars(select(Identity.system).where(Identity.contact_id == contact_id)))
    assert log.operation == f"deletion.{decision}" and log.object_ids[0] == "1246978"
    if decision == "propagate":                            # both unlinked; the Salesforce delete is queued
        assert systems == set() and "salesforce:00Q5g00000Lq1aBEAR" in log.error
    else:
        assert systems == {"salesforce"}                   # the deleted id is unlinked, the contact stays
