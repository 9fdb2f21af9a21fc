"""Concurrent deliveries on PostgreSQL over real HTTP: a batch delivered 50 times at once is stored
once, relayed once and applied once."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import func, select

from hub.app import create_app
from hub.db import transaction
from hub.models import Activity, Contact, Event, Identity, Outbox
from tests.conftest import fixture_json, make_runtime, run_pipeline
from tests.live_server import property_change, serve, signed_hubspot_post

pytestmark = pytest.mark.postgres

DELIVERIES = 50
OBJECT_ID = 5101
EMAIL = "ada.lovelace@example.com"


@pytest.fixture
def pg_runtime(monkeypatch, tmp_path, postgres_url, redis_url):
    return make_runtime(monkeypatch, tmp_path, postgres_url, redis_url)


@pytest.fixture
def pg_hubspot(pg_runtime):
    from hub import admin
    from tests.conftest import HUBSPOT_APP_ID, HUBSPOT_APP_SECRET, HUBSPOT_PORTAL_ID

    workspace = admin.create_workspace(pg_runtime, "Acme")
    admin.connect(pg_runtime, workspace["workspace_id"], "hubspot", HUBSPOT_PORTAL_ID,
                  {"access_token": "test-access-token", "app_secret": HUBSPOT_APP_SECRET},
                  {"app_id": HUBSPOT_APP_ID})
    return workspace


def one_person_batch() -> list[dict]:
    """HubSpot's documented creation sample for one contact, then its email and first name."""
    creation = fixture_json("hubspot/contact.creation__sample.json")[0]
    creation.update(objectId=OBJECT_ID, attemptNumber=0)
    occurred = creation["occurredAt"]
    return [creation,
            property_change(OBJECT_ID, "email", EMAIL, 910001, occurred + 1000),
            property_change(OBJECT_ID, "firstname", "Ada", 910002, occurred + 2000)]


def count(runtime, model, *where) -> int:
    with transaction(runtime.engine) as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def deliver_concurrently(base_url: str, body: bytes, headers: dict, times: int) -> list[requests.Response]:
    start = threading.Barrier(times)

    def post(_):
        with requests.Session() as http:
            start.wait(timeout=30)
            return http.post(base_url + "/webhooks/hubspot", data=body, headers=headers, timeout=30)

    with ThreadPoolExecutor(max_workers=times) as pool:
        return list(pool.map(post, range(times)))


def test_fifty_concurrent_deliveries_of_one_batch_are_stored_and_applied_once(pg_runtime, pg_hubspot):
    items = one_person_batch()
    with serve(create_app(runtime=pg_runtime)) as base_url:
        body, headers = signed_hubspot_post(base_url, items)
        responses = deliver_concurrently(base_url, body, headers, DELIVERIES)

    assert [r.status_code for r in responses] == [200] * DELIVERIES, [r.text for r in responses if r.status_code != 200]
    answers = [r.json() for r in responses]
    assert sum(a["accepted"] for a in answers) == len(items)            # each event stored by one delivery
    assert sum(a["duplicates"] for a in answers) == len(items) * (DELIVERIES - 1)
    assert count(pg_runtime, Event) == len(items)
    assert count(pg_runtime, Outbox) == 1
    with transaction(pg_runtime.engine) as session:
        outbox = session.scalars(select(Outbox)).one()
        event_ids = session.scalars(select(Event.id).order_by(Event.occurred_at)).all()
    assert outbox.payload["event_ids"] == list(event_ids)               # in the order they happened

    run_pipeline(pg_runtime)

    with transaction(pg_runtime.engine) as session:
        events = session.scalars(select(Event)).all()
        assert [(e.status, e.attempts) for e in events] == [("processed", 1)] * len(items)
        contact = session.scalars(select(Contact)).one()
        assert (contact.email, contact.first_name) == (EMAIL, "Ada")
        identity = session.scalars(select(Identity)).one()
        assert (identity.system, identity.external_id, identity.contact_id) == ("hubspot", str(OBJECT_ID), contact.id)
    assert count(pg_runtime, Activity) == 0                             # CRM record changes are not behaviour
    assert count(pg_runtime, Outbox, Outbox.job == "process_events", Outbox.done_at.is_(None)) == 0


def test_two_transactions_scheduling_one_contact_push_share_one_pending_row(pg_runtime, pg_hubspot):
    """The second waits for the first's uncommitted row (unique key), then merges into it."""
    from hub.models import PendingPush
    from hub.sync import push
    from tests.db_helpers import second_waits_for_first

    ws = pg_hubspot["workspace_id"]
    with transaction(pg_runtime.engine) as session:
        contact = Contact(workspace_id=ws, email=EMAIL)
        session.add(contact)
    second_waits_for_first(pg_runtime.engine,
                           lambda session: push.schedule_push(session, ws, contact.id, {"title"}, "form"),
                           lambda session: push.schedule_push(session, ws, contact.id, {"city"}, "form"))
    with transaction(pg_runtime.engine) as session:
        [row] = session.scalars(select(PendingPush)).all()
        assert (sorted(row.fields), row.generation) == (["city", "title"], 2)
