"""`message` effects to contacts: consent per channel, erased contacts, frequency caps (and their race)."""
from __future__ import annotations

import logging
import shutil
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from hub.connectors.email import EmailNotice
from hub.db import transaction
from hub.models import Contact, LeadEffect
from hub.rules import caps
from hub.rules.effects import run_effects
from hub.rules.notices import configure_notice
from tests.conftest import make_runtime

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
EMAIL_OK = {"email": {"granted": True, "source": "form", "at": "2026-11-01T00:00:00+00:00"}}
SMTP = {"host": "smtp.example.com", "from_address": "hub@example.com", "to": ["sales@example.com"]}


@pytest.fixture
def ws(workspace) -> str:
    return workspace["workspace_id"]


@pytest.fixture
def outbox(monkeypatch) -> list:
    """Email channel: what would have gone out over SMTP (the decision is under test, not SMTP)."""
    sent = []

    def send(self, notice):
        time.sleep(0.05)                 # a real send takes a while: widens any race window
        sent.append(notice)

    monkeypatch.setattr(EmailNotice, "send", send)
    return sent


@pytest.fixture
def email_channel(runtime, ws, outbox):
    configure_notice(runtime, ws, "email", SMTP)
    return outbox


def add_contact(runtime, ws, email="ana@acme.io", consent=None, **fields) -> str:
    with transaction(runtime.engine) as session:
        contact = Contact(workspace_id=ws, email=email, first_name="Ana", consent=consent if consent is not None
                          else EMAIL_OK, custom=fields.pop("custom", {}), **fields)
        session.add(contact)
        session.flush()
        return contact.id


_keys = iter(range(1_000_000))


def add_message(runtime, ws, contact_id, channel="email", status="pending", result=None, done_at=None) -> int:
    with transaction(runtime.engine) as session:
        effect = LeadEffect(workspace_id=ws, contact_id=contact_id, kind="message", status=status,
                            params={"channel": channel, "segment": "buyers", "on": "enter",
                                    "subject": "Hi {first_name}", "text": "Welcome"},
                            idempotency_key=f"message:{next(_keys)}", result=result or {}, done_at=done_at)
        session.add(effect)
        session.flush()
        return effect.id


def sent_before(runtime, ws, contact_id, *ages: timedelta, channel="email") -> None:
    """Messages already sent, `age` before now."""
    for age in ages:
        add_message(runtime, ws, contact_id, channel, status="done", result={"sent": channel},
                    done_at=datetime.now(timezone.utc) - age)


def result_of(runtime, effect_id) -> dict:
    with transaction(runtime.engine) as session:
        effect = session.get(LeadEffect, effect_id)
        return {"status": effect.status, **effect.result}


DAY = timedelta(days=1)


def test_under_the_cap_the_message_is_sent_to_the_contact(runtime, ws, email_channel):
    contact_id = add_contact(runtime, ws)
    sent_before(runtime, ws, contact_id, 1 * DAY, 6 * DAY)
    effect_id = add_message(runtime, ws, contact_id)

    assert run_effects(runtime, [effect_id])["done"] == 1

    assert result_of(runtime, effect_id) == {"status": "done", "sent": "email"}
    assert [(n.to, n.subject, n.text) for n in email_channel] == [(("ana@acme.io",), "Hi Ana", "Welcome")]


def test_at_the_cap_the_message_is_skipped_and_logged_without_personal_data(runtime, ws, email_channel, caplog):
    contact_id = add_contact(runtime, ws)
    sent_before(runtime, ws, contact_id, 1 * DAY, 3 * DAY, 6 * DAY)
    effect_id = add_message(runtime, ws, contact_id)
    caplog.set_level(logging.INFO, logger="hub.rules")

    run_effects(runtime, [effect_id])

    assert result_of(runtime, effect_id) == {"status": "done", "skipped": "frequency_cap"}
    assert email_channel == []
    lines = [r.getMessage() for r in caplog.records if "frequency_cap" in r.getMessage()]
    assert lines == [f"message effect {effect_id} to contact {contact_id} on email not sent: frequency_cap"]
    assert not any("ana" in r.getMessage() for r in caplog.records)


def test_a_message_older_than_the_window_no_longer_counts(runtime, ws, email_channel):
    contact_id = add_contact(runtime, ws)
    sent_before(runtime, ws, contact_id, 1 * DAY, 3 * DAY, 7 * DAY + timedelta(minutes=1))
    effect_id = add_message(runtime, ws, contact_id)

    run_effects(runtime, [effect_id])

    assert result_of(runtime, effect_id) == {"status": "done", "sent": "email"}
    assert len(email_channel) == 1


def test_the_window_edge_with_explicit_times(runtime, ws):
    contact_id = add_contact(runtime, ws)
    for age in (7 * DAY - timedelta(seconds=1), 7 * DAY + timedelta(seconds=1)):
        add_message(runtime, ws, contact_id, status="done", result={"sent": "email"}, done_at=NOW - age)

    with transaction(runtime.engine) as session:
        assert caps.used(session, contact_id, "email", NOW - 7 * DAY) == 1
        assert caps.used(session, contact_id, "email", NOW - 8 * DAY) == 2
        assert caps.used(session, contact_id, "email", NOW + timedelta(seconds=1)) == 0


def test_only_sent_or_in_flight_messages_of_the_same_contact_and_channel_count(runtime, ws):
    contact_id = add_contact(runtime, ws)
    other_id = add_contact(runtime, ws, email="bo@acme.io")
    recent = NOW - DAY
    add_message(runtime, ws, contact_id, status="done", result={"sent": "email"}, done_at=recent)      # counts
    add_message(runtime, ws, contact_id, status="pending", result={"sending": "email"})                # counts
    add_message(runtime, ws, contact_id, "sms", status="done", result={"sent": "sms"}, done_at=recent)
    add_message(runtime, ws, contact_id, status="done", result={"skipped": "no_consent"}, done_at=recent)
    add_message(runtime, ws, contact_id, status="failed", result={"sending": "email"})
    add_message(runtime, ws, contact_id, status="pending")                                             # not claimed
    add_message(runtime, ws, other_id, status="done", result={"sent": "email"}, done_at=recent)

    with transaction(runtime.engine) as session:
        assert caps.used(session, contact_id, "email", NOW - 7 * DAY) == 2
        assert caps.used(session, contact_id, "sms", NOW - 7 * DAY) == 1


def test_a_message_being_sent_by_another_worker_counts_against_the_cap(runtime, ws, email_channel):
    contact_id = add_contact(runtime, ws)
    sent_before(runtime, ws, contact_id, DAY, DAY)
    add_message(runtime, ws, contact_id, status="pending", result={"sending": "email"})
    effect_id = add_message(runtime, ws, contact_id)

    run_effects(runtime, [effect_id])

    assert result_of(runtime, effect_id)["skipped"] == "frequency_cap" and email_channel == []


def test_a_workspace_cap_replaces_the_default(runtime, ws, email_channel):
    caps.set_cap(runtime, ws, "email", 1, 30)
    contact_id = add_contact(runtime, ws)
    sent_before(runtime, ws, contact_id, 20 * DAY)
    effect_id = add_message(runtime, ws, contact_id)

    run_effects(runtime, [effect_id])

    assert result_of(runtime, effect_id)["skipped"] == "frequency_cap"


def test_a_retried_message_does_not_count_its_own_claim(runtime, ws, monkeypatch):
    from hub.exceptions import RetriableError

    configure_notice(runtime, ws, "email", SMTP)
    calls = []

    def flaky(self, notice):
        calls.append(notice)
        if len(calls) == 1:
            raise RetriableError("smtp 421", status=421)

    monkeypatch.setattr(EmailNotice, "send", flaky)
    caps.set_cap(runtime, ws, "email", 1, 7)
    contact_id = add_contact(runtime, ws)
    effect_id = add_message(runtime, ws, contact_id)

    assert run_effects(runtime, [effect_id])["retry"] == 1
    assert result_of(runtime, effect_id) == {"status": "pending", "sending": "email"}
    run_effects(runtime, [effect_id])

    assert result_of(runtime, effect_id) == {"status": "done", "sent": "email"} and len(calls) == 2


@pytest.mark.parametrize("consent, channel, reason", [
    ({}, "email", "no_consent"),
    ({"email": {"granted": False, "source": "hubspot", "at": "2026-11-02T00:00:00+00:00"}}, "email", "no_consent"),
    ({"sms": {"granted": True}}, "email", "no_consent"),
    ({"email": {"granted": True}}, "sms", "no_consent"),
    ({"sms": {"granted": False}}, "sms", "no_consent"),
    ({"email": True}, "sms", "no_consent"),
])
def test_without_consent_for_the_channel_nothing_is_sent(runtime, ws, email_channel, consent, channel, reason):
    contact_id = add_contact(runtime, ws, consent=consent, phone="+14155550100")
    effect_id = add_message(runtime, ws, contact_id, channel)

    run_effects(runtime, [effect_id])

    assert result_of(runtime, effect_id) == {"status": "done", "skipped": reason}
    assert email_channel == []


def test_an_erased_contact_never_gets_a_message(runtime, ws, email_channel):
    contact_id = add_contact(runtime, ws, custom={"erased_at": "2026-11-19T10:00:00+00:00"})
    effect_id = add_message(runtime, ws, contact_id)

    run_effects(runtime, [effect_id])

    assert result_of(runtime, effect_id) == {"status": "done", "skipped": "erased"} and email_channel == []


def test_a_contact_without_the_channels_address_is_skipped(runtime, ws, email_channel):
    contact_id = add_contact(runtime, ws, email=None)
    no_phone = add_contact(runtime, ws, email="bo@acme.io", consent={"sms": {"granted": True}})
    effects = [add_message(runtime, ws, contact_id), add_message(runtime, ws, no_phone, "sms")]

    run_effects(runtime, effects)

    assert [result_of(runtime, e)["skipped"] for e in effects] == ["no_address", "no_address"]


def test_a_message_without_a_configured_channel_is_skipped(runtime, ws, outbox):
    effect_id = add_message(runtime, ws, add_contact(runtime, ws))

    run_effects(runtime, [effect_id])

    assert result_of(runtime, effect_id) == {"status": "done", "skipped": "no_channel"}


# --- the race: two workers messaging one contact at once -------------------------------------------

@pytest.fixture(params=["postgres", "sqlite"])
def race_runtime(request, monkeypatch, tmp_path, redis_url, sqlite_template):
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        shutil.copy(sqlite_template, tmp_path / "race.db")
        url = f"sqlite:///{tmp_path / 'race.db'}"
    return make_runtime(monkeypatch, tmp_path, url, redis_url)


WORKERS = 6


def test_concurrent_messages_to_one_contact_never_send_past_the_cap(race_runtime, outbox):
    from hub import admin

    runtime = race_runtime
    ws = admin.create_workspace(runtime, "Acme")["workspace_id"]
    configure_notice(runtime, ws, "email", SMTP)
    caps.set_cap(runtime, ws, "email", 2, 7)
    contact_id = add_contact(runtime, ws)
    effect_ids = [add_message(runtime, ws, contact_id) for _ in range(WORKERS)]
    start = threading.Barrier(WORKERS)
    errors = []

    def worker(effect_id):
        start.wait()
        try:
            run_effects(runtime, [effect_id])
        except Exception as exc:           # surfaced below: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(e,)) for e in effect_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    results = sorted(tuple(result_of(runtime, e).items()) for e in effect_ids)
    assert results.count((("status", "done"), ("sent", "email"))) == 2
    assert results.count((("status", "done"), ("skipped", "frequency_cap"))) == WORKERS - 2
    assert len(outbox) == 2
    with transaction(runtime.engine) as session:
        assert session.scalar(select(Contact.id).where(Contact.id == contact_id)) == contact_id


@pytest.mark.parametrize("params, accepted", [
    ({"channel": "fax"}, False), ({"channel": "webhook"}, True), ({}, True), ({"channel": "sms"}, True),
])
def test_a_message_trigger_names_a_known_channel_when_the_rules_are_saved(runtime, ws, params, accepted):
    from marshmallow import ValidationError

    from hub.rules import store
    from hub.rules.presets import B2B

    document = store.to_document(B2B)
    document["segments"].append({"name": "buyers", "when": "score >= 50", "triggers": [
        {"on": "enter", "action": "message", "params": params}]})
    with transaction(runtime.engine) as session:
        if accepted:
            assert store.save_rules(session, ws, document) == 1
            return
        with pytest.raises(ValidationError) as caught:
            store.save_rules(session, ws, document)
    assert "one of email, sms, webhook" in str(caught.value.messages)
