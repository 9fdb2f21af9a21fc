"""Identity resolution (external id -> email -> phone), races between workers, activities, retries and replay."""
from __future__ import annotations

import copy
import json
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from hub import defaults
from hub.db import is_postgres, transaction
from hub.models import Activity, Contact, Event
from hub.sync import identity as identity_mod
from tests.conftest import fixture_json, run_pipeline
from tests.processing_helpers import (
    contact_of,
    contacts,
    count,
    deliver,
    deliver_and_run,
    events,
    hubspot_items,
    identities,
    process_now,
    snapshot,
)
from tests.receiver_helpers import add_source
from hub.sandbox.signing import standard_webhook_headers

FORM_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"      # the Standard Webhooks test-vector secret
JANE = 1246965


@pytest.fixture
def form_path(runtime, workspace):
    return add_source(runtime, workspace, "generic", FORM_SECRET)


def form_body(timestamp: str | None = None, **data) -> bytes:
    document = copy.deepcopy(fixture_json("standard-webhooks/form.submitted__demo-request.json"))
    if timestamp:
        document["timestamp"] = timestamp
    for name, value in data.items():
        if value is None:
            document["data"].pop(name, None)
        else:
            document["data"][name] = value
    return json.dumps(document).encode()


def submit(client, path: str, body: bytes, message_id: str | None = None) -> None:
    message_id = message_id or f"msg_{uuid.uuid4().hex}"
    response = client.post(path, data=body, headers=standard_webhook_headers(FORM_SECRET, message_id, body))
    assert response.status_code in (200, 202), response.get_json()


def ws(workspace) -> str:
    return workspace["workspace_id"]


# --- resolution ---------------------------------------------------------------------------------------

def test_a_form_submission_joins_the_crm_contact_by_email(client, runtime, hubspot_connection, workspace, form_path):
    deliver_and_run(client, runtime, hubspot_items("contact.propertyChange__profile"))
    submit(client, form_path, form_body(email="  JANE.DOE@Example.com", phone=None, first_name="Janie"))
    run_pipeline(runtime)
    [jane] = contacts(runtime, ws(workspace))
    assert identities(runtime, jane.id) == {("hubspot", str(JANE))}
    assert jane.first_name == "Janie"                      # the form (2026) is newer than the CRM value (2025)
    assert jane.consent["email"]["granted"] is True and jane.consent["email"]["source"] == "form"
    with transaction(runtime.engine) as session:
        [activity] = session.scalars(select(Activity)).all()
    assert activity.contact_id == jane.id and activity.idempotency_key == f"event:{activity.event_id}:{activity.kind}"


@pytest.mark.parametrize("form_email, same_person", [
    (None, True),                         # no email: the phone identifies the person
    ("someone.else@example.com", False),  # a different email: a shared phone is not enough
])
def test_phone_resolution(client, runtime, hubspot_connection, workspace, form_path, form_email, same_person):
    deliver_and_run(client, runtime, hubspot_items("contact.propertyChange__profile"))   # +4930901820, DE
    submit(client, form_path, form_body(email=form_email, phone="+49 30 901820", country=None))
    run_pipeline(runtime)
    found = contacts(runtime, ws(workspace))
    assert len(found) == (1 if same_person else 2)
    assert all(c.phone == "+4930901820" for c in found)


def test_a_phone_without_prefix_is_read_in_the_contact_country(client, runtime, workspace, form_path):
    submit(client, form_path, form_body(email="max@example.de", phone="030 901820", country="Germany"))
    run_pipeline(runtime)
    [max_] = contacts(runtime, ws(workspace))
    assert (max_.country, max_.phone) == ("DE", "+4930901820")


def test_a_submission_naming_nobody_is_ignored_with_its_reason(client, runtime, workspace, form_path):
    submit(client, form_path, form_body(email="not an email", phone=None))
    run_pipeline(runtime)
    [event] = events(runtime)
    assert event.status == "ignored" and event.last_error == "no_identifier"
    assert contacts(runtime, ws(workspace)) == []


def test_replaying_a_form_event_adds_no_second_activity(client, runtime, workspace, form_path):
    from hub.sync import replay

    submit(client, form_path, form_body())
    run_pipeline(runtime)
    before = snapshot(runtime, ws(workspace))
    [event] = events(runtime)
    assert replay.replay_event(runtime, event.id)
    run_pipeline(runtime)
    assert snapshot(runtime, ws(workspace)) == before
    assert count(runtime, Activity) == 1


@pytest.mark.parametrize("submitted, recreated", [
    (timedelta(days=-1), False),     # a late delivery of a submission made before the erasure
    (timedelta(minutes=5), True),    # the person comes back after the erasure: a new relationship
])
def test_an_erased_email_comes_back_only_through_a_newer_submission(client, runtime, hubspot_connection, workspace,
                                                                   form_path, submitted, recreated):
    deliver_and_run(client, runtime, hubspot_items("contact.propertyChange__profile"))
    deliver_and_run(client, runtime, hubspot_items("contact.privacyDeletion__sample", objectId=JANE))
    at = (datetime.now(timezone.utc) + submitted).isoformat()
    submit(client, form_path, form_body(timestamp=at, email="jane.doe@example.com"))
    run_pipeline(runtime)
    emails = [c.email for c in contacts(runtime, ws(workspace))]
    assert emails == ([None, "jane.doe@example.com"] if recreated else [None])
    assert events(runtime)[-1].status == ("processed" if recreated else "ignored")


# --- races between workers ----------------------------------------------------------------------------

def test_concurrent_workers_creating_one_person_make_one_contact(client, runtime, workspace, form_path):
    workers = 12
    for _ in range(workers):
        submit(client, form_path, form_body(email="race@example.com"))
    ids = [e.id for e in events(runtime)]
    barrier = threading.Barrier(workers)
    outcomes: list[str] = []

    def work(event_id: int) -> None:
        barrier.wait()
        outcomes.append(process_now(runtime, event_id))

    threads = [threading.Thread(target=work, args=(event_id,)) for event_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["processed"] * workers
    [contact] = contacts(runtime, ws(workspace))
    assert contact.email == "race@example.com"
    assert count(runtime, Activity) == workers


def test_one_event_handed_to_several_workers_at_once_is_applied_once(client, runtime, workspace, form_path):
    submit(client, form_path, form_body(email="twice@example.com"))
    [event] = events(runtime)
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def work() -> None:
        barrier.wait()
        outcomes.append(process_now(runtime, event.id))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert "processed" in outcomes and set(outcomes) <= {"processed", "skipped"}
    assert len(contacts(runtime, ws(workspace))) == 1 and count(runtime, Activity) == 1
    assert events(runtime)[0].status == "processed"


def test_a_unique_email_race_is_resolved_again_inside_a_savepoint(postgres_url, client, runtime, workspace,
                                                                 form_path, monkeypatch):
    """Another worker commits the same person between our lookup and our insert: we join its contact."""
    if not is_postgres(runtime.engine):
        pytest.skip("needs the PostgreSQL runtime (row locks while another connection commits)")
    real_new_contact = identity_mod.new_contact
    calls = []

    def competitor_first(session, workspace_id):
        if not calls:
            with transaction(runtime.engine) as other:        # the other worker, committed first
                other.add(Contact(workspace_id=workspace_id, email="race@example.com", custom={"by": "other"},
                                  consent={}, field_updated_at={}, field_sources={}, score_reasons=[]))
        calls.append(1)
        return real_new_contact(session, workspace_id)

    monkeypatch.setattr(identity_mod, "new_contact", competitor_first)
    submit(client, form_path, form_body(email="race@example.com"))
    run_pipeline(runtime)
    [contact] = contacts(runtime, ws(workspace))
    assert contact.custom["by"] == "other" and contact.first_name == "Grace"
    assert [e.status for e in events(runtime)] == ["processed"]
    assert len(calls) == 1                                     # the second resolution found the other contact


def test_effects_roll_back_with_the_event_transaction(client, runtime, workspace, form_path):
    """Savepoints nest inside the event's transaction on SQLite too (pysqlite would commit a bare one)."""
    from hub.sync.processing import process_event

    submit(client, form_path, form_body())
    [event] = events(runtime)
    with pytest.raises(RuntimeError):
        with transaction(runtime.engine) as session:
            stored = session.scalar(select(Event).where(Event.id == event.id))
            assert process_event(session, runtime, stored) == "processed"
            raise RuntimeError("worker died before commit")
    assert contacts(runtime, ws(workspace)) == [] and count(runtime, Activity) == 0


# --- failures, retries, replay ----------------------------------------------------------------------

def test_a_failing_handler_is_retried_then_failed_then_replayed(client, runtime, hubspot_connection, workspace,
                                                               monkeypatch):
    from hub.cli import main as cli
    from webhooks import hubspot

    monkeypatch.setattr(defaults, "EVENT_RETRY_BACKOFF_SECONDS", (0, 0, 0, 0))
    calls = []

    def broken(item):
        calls.append(item["eventId"])
        raise RuntimeError("handler bug")

    real = hubspot.HANDLERS["contact.propertyChange"]
    monkeypatch.setitem(hubspot.HANDLERS, "contact.propertyChange", broken)
    deliver(client, hubspot_items("contact.propertyChange__profile", index=0))
    run_pipeline(runtime)
    [event] = events(runtime)
    assert event.status == "failed" and event.attempts == defaults.EVENT_MAX_ATTEMPTS
    assert "RuntimeError: handler bug" in event.last_error
    assert len(calls) == defaults.EVENT_MAX_ATTEMPTS
    assert contacts(runtime, ws(workspace)) == []

    monkeypatch.setitem(hubspot.HANDLERS, "contact.propertyChange", real)       # the bug is fixed
    result = CliRunner().invoke(cli, ["replay", "--failed"])
    assert result.exit_code == 0, result.output
    assert "requeued: 1" in result.output
    run_pipeline(runtime)
    [event] = events(runtime)
    assert event.status == "processed" and event.last_error is None
    assert contact_of(runtime, ws(workspace), "hubspot", JANE).first_name == "Jane Mary"
