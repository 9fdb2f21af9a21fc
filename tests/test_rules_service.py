"""Lead rules against the database: evaluation writes, coalesced scheduling, routing order, rule
documents, recycling, and the batched decay pass (PostgreSQL when it answers, else SQLite)."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest
from marshmallow import ValidationError
from sqlalchemy import func, select

from hub.db import transaction
from hub.models import (
    Activity,
    Assignment,
    Contact,
    LeadEffect,
    LeadScore,
    Outbox,
    PendingPush,
    Rep,
    SegmentMembership,
    SyncLog,
)
from hub.rules import store
from hub.rules.decay import decay_workspace
from hub.rules.evaluation import evaluate_contact, explain
from hub.rules.handoff import assign, recycle
from hub.rules.presets import B2B
from hub.rules.schedule import schedule_evaluation

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def ws(workspace) -> str:
    return workspace["workspace_id"]


def add_contact(runtime, ws, activities=(), **fields) -> str:
    with transaction(runtime.engine) as session:
        contact = Contact(workspace_id=ws, **fields)
        session.add(contact)
        session.flush()
        for n, (kind, days_ago, properties) in enumerate(activities):
            session.add(Activity(workspace_id=ws, contact_id=contact.id, kind=kind, properties=properties,
                                 occurred_at=NOW - timedelta(days=days_ago), idempotency_key=f"{contact.id}:{n}"))
        return contact.id


def add_rep(runtime, ws, email, **fields) -> int:
    with transaction(runtime.engine) as session:
        rep = Rep(workspace_id=ws, email=email, **{"weight": 1.0, **fields})
        session.add(rep)
        session.flush()
        return rep.id


VP = {"email": "ana@acme.io", "first_name": "Ana", "title": "VP Marketing", "company_size": 500}


def test_evaluation_writes_score_grade_reasons_membership_and_a_handoff_effect(runtime, ws, hubspot_connection):
    contact_id = add_contact(runtime, ws, [("demo_request", 0, {"form": "demo-request"}), ("page_view", 0, {})], **VP)

    with transaction(runtime.engine) as session:
        outcome = evaluate_contact(session, ws, contact_id, NOW)

    assert (outcome.evaluation.score, outcome.evaluation.grade, outcome.entered) == (56.0, "B", ["mql"])
    with transaction(runtime.engine) as session:
        contact = session.get(Contact, contact_id)
        lead = session.get(LeadScore, contact_id)
        effects = session.scalars(select(LeadEffect)).all()
        assert (contact.score, contact.grade, contact.mql, contact.lifecycle_stage) == (56.0, "B", True,
                                                                                         "marketingqualifiedlead")
        assert contact.score_reasons == ["Demo requested +55", "Page views +1"]
        assert (lead.decaying, lead.static, lead.fit_points) == (56.0, 0.0, 65.0)
        assert [(e.kind, e.params["segment"]) for e in effects] == [("handoff", "mql")]
        assert session.scalar(select(Outbox.job).where(Outbox.job == "rule_effects")) == "rule_effects"
        assert set(session.scalar(select(PendingPush.fields))) == {"score", "grade", "score_reasons", "lifecycle_stage"}


def test_a_second_evaluation_changes_nothing_and_decides_no_new_effect(runtime, ws):
    contact_id = add_contact(runtime, ws, [("demo_request", 0, {})], **VP)
    with transaction(runtime.engine) as session:
        evaluate_contact(session, ws, contact_id, NOW)
    with transaction(runtime.engine) as session:
        again = evaluate_contact(session, ws, contact_id, NOW)

    assert (again.entered, again.left, again.effects, again.changed) == ([], [], [], set())
    with transaction(runtime.engine) as session:
        assert session.scalar(select(func.count()).select_from(LeadEffect)) == 1
        assert session.scalar(select(func.count()).select_from(SegmentMembership)) == 1


def test_lifecycle_is_never_moved_backwards(runtime, ws):
    contact_id = add_contact(runtime, ws, [("demo_request", 0, {})], lifecycle_stage="customer", **VP)
    with transaction(runtime.engine) as session:
        outcome = evaluate_contact(session, ws, contact_id, NOW)
        assert outcome.entered == ["mql"]
        assert session.get(Contact, contact_id).lifecycle_stage == "customer"


def test_schedule_evaluation_coalesces_per_contact_until_a_worker_takes_it(runtime, ws):
    contact_id = add_contact(runtime, ws, **VP)
    for _ in range(3):
        with transaction(runtime.engine) as session:
            schedule_evaluation(session, ws, contact_id)
            schedule_evaluation(session, ws, contact_id)
    with transaction(runtime.engine) as session:
        rows = session.scalars(select(Outbox).where(Outbox.job == "evaluate_rules")).all()
        assert [r.payload for r in rows] == [{"contact_id": contact_id}]
        rows[0].enqueued_at = NOW          # a worker has it: the next change needs a new evaluation
    with transaction(runtime.engine) as session:
        schedule_evaluation(session, ws, contact_id)
        assert session.scalar(select(func.count()).select_from(Outbox).where(Outbox.job == "evaluate_rules")) == 2


def test_routing_order_account_owner_then_territory_then_round_robin(runtime, ws):
    document = store.to_document(B2B)
    document["routing"] = {"territories": [{"name": "dach", "when": "country in ('DE', 'AT', 'CH')",
                                            "reps": ["de@hub.io"]}]}
    with transaction(runtime.engine) as session:
        store.save_rules(session, ws, document)
    for email in ("us1@hub.io", "us2@hub.io", "de@hub.io"):
        add_rep(runtime, ws, email)
    add_rep(runtime, ws, "owner@hub.io")
    add_contact(runtime, ws, email="cto@acme.io", owner="owner@hub.io")   # a colleague owned by owner@
    colleague = add_contact(runtime, ws, email="new@acme.io", country="DE")
    german = add_contact(runtime, ws, email="x@firma.de", country="DE")
    others = [add_contact(runtime, ws, email=f"p{n}@corp{n}.com", country="US") for n in range(4)]

    with transaction(runtime.engine) as session:
        owners = [assign(session, ws, cid, f"t:{cid}", NOW) for cid in [colleague, german] + others]
        got = [(a.owner_email, a.reason) for a in owners]

    assert got[0] == ("owner@hub.io", "account_owner")
    assert got[1] == ("de@hub.io", "territory:dach")
    # no territory for US: weighted round robin over everyone (weights 1), in id order
    assert [g[0] for g in got[2:]] == ["us1@hub.io", "us2@hub.io", "de@hub.io", "owner@hub.io"]
    assert all(reason == "round_robin" for _, reason in got[2:])


def test_an_out_of_office_account_owner_is_passed_over(runtime, ws):
    add_rep(runtime, ws, "owner@hub.io", out_of_office_until=NOW + timedelta(days=1))
    add_rep(runtime, ws, "rr@hub.io")
    add_contact(runtime, ws, email="cto@acme.io", owner="owner@hub.io")
    lead = add_contact(runtime, ws, email="new@acme.io")
    with transaction(runtime.engine) as session:
        chosen = assign(session, ws, lead, "k", NOW)
        assert (chosen.owner_email, chosen.reason) == ("rr@hub.io", "round_robin")
        assert session.scalar(select(SyncLog.error).where(SyncLog.operation == "assign")).startswith(
            "round_robin -> r***@hub.io (account owner owner@hub.io unavailable)")


@pytest.mark.parametrize("path, value, message", [
    (("activity_rules", 0, "when"), "compnay_size > 10", "unknown name 'compnay_size'"),
    (("profile_rules", 0, "when"), "__import__('os')", "function '__import__' is not allowed"),
    (("segments", 0, "when"), "score >", "syntax error"),
    (("mql", "exit_score"), 90, "exit_score must not be above enter_score"),
    (("activity_rules", 0, "points"), "many", "Not a valid number."),
])
def test_rule_documents_are_validated_before_they_are_saved(runtime, ws, path, value, message):
    document = store.to_document(B2B)
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with transaction(runtime.engine) as session:
        with pytest.raises(ValidationError) as caught:
            store.save_rules(session, ws, document)
    assert message in str(caught.value.messages)
    with transaction(runtime.engine) as session:
        assert store.load_rules(session, ws)[0] == 0


def test_saved_rules_become_the_live_version(runtime, ws):
    document = store.to_document(B2B)
    document["mql"]["enter_score"] = 90
    with transaction(runtime.engine) as session:
        assert store.save_rules(session, ws, document) == 1
    contact_id = add_contact(runtime, ws, [("demo_request", 0, {})], **VP)
    with transaction(runtime.engine) as session:
        result = explain(session, ws, contact_id, NOW)
    assert (result.score, result.mql) == (55.0, False)


def test_recycled_lead_leaves_mql_and_must_earn_it_again_from_new_activity(runtime, ws):
    contact_id = add_contact(runtime, ws, [("demo_request", 1, {})], **VP)
    with transaction(runtime.engine) as session:
        evaluate_contact(session, ws, contact_id, NOW)
        assign(session, ws, contact_id, "k", NOW)
    with transaction(runtime.engine) as session:
        assert recycle(session, ws, contact_id, "no budget this year", NOW)
    with transaction(runtime.engine) as session:
        outcome = evaluate_contact(session, ws, contact_id, NOW + timedelta(hours=1))
        lead = session.get(LeadScore, contact_id)
        assignment = session.scalar(select(Assignment))
        assert (outcome.evaluation.score, outcome.evaluation.mql) == (0.0, False)
        assert "nurture" in outcome.entered
        assert (lead.recycle_reason, assignment.status, assignment.note) == ("no budget this year", "recycled",
                                                                             "no budget this year")
        assert session.scalar(select(SyncLog.error).where(SyncLog.operation == "recycle")) == "no budget this year"


def test_decay_pass_matches_a_full_re_evaluation_and_reports_threshold_crossings(runtime, ws):
    ids = [add_contact(runtime, ws, [("demo_request", 0, {})], email=f"p{n}@acme.io", title="VP", company_size=500)
           for n in range(3)]
    with transaction(runtime.engine) as session:
        for contact_id in ids:
            evaluate_contact(session, ws, contact_id, NOW)

    # three weeks later: 55 -> 55 * 0.5 ** (21 / 30) = 33.86, below the MQL exit score 35
    report = decay_workspace(runtime.engine, ws, 30, NOW + timedelta(weeks=3), watch=(50.0, 35.0), batch_size=2)

    assert (report.scanned, report.updated, sorted(report.crossed)) == (3, 3, sorted(ids))
    with transaction(runtime.engine) as session:
        scores = [session.get(Contact, cid).score for cid in ids]
        full = explain(session, ws, ids[0], NOW + timedelta(weeks=3))
        reasons = session.get(LeadScore, ids[0]).contributions["demo_request"]["points"]
    assert scores == [33.86] * 3
    assert full.score == 33.86
    assert reasons == pytest.approx(55 * 0.5 ** (21 / 30), abs=1e-6)


def test_periodic_decay_job_over_simulated_weeks_takes_the_lead_out_of_mql_only_below_the_exit_score(runtime, ws):
    from hub.rules import jobs

    contact_id = add_contact(runtime, ws, [("demo_request", 0, {})], **VP)
    with transaction(runtime.engine) as session:
        evaluate_contact(session, ws, contact_id, NOW)
    row = Outbox(workspace_id=ws, job="rules_decay", payload={})

    weekly = []
    for week in range(1, 5):
        jobs.decay(runtime, row, now=NOW + timedelta(weeks=week))
        with transaction(runtime.engine) as session:
            contact = session.get(Contact, contact_id)
            weekly.append((contact.score, contact.mql))

    # 55 * 0.5 ** (7w / 30d); below the entry score 50 it stays an MQL (hysteresis) until under 35
    assert weekly == [(46.79, True), (39.8, True), (33.86, False), (28.8, False)]
    with transaction(runtime.engine) as session:
        stays = session.scalars(select(SegmentMembership).where(SegmentMembership.segment == "mql")).all()
        assert [(m.entered_at, m.left_at) for m in stays] == [(NOW, NOW + timedelta(weeks=3))]
        assert session.scalar(select(func.count()).select_from(Outbox).where(
            Outbox.job == "rules_decay", Outbox.done_at.is_(None))) >= 1   # the job re-armed itself


def test_decay_pass_hands_whole_point_score_changes_to_the_sync_push(runtime, ws, hubspot_connection):
    from hub.rules import jobs

    contact_id = add_contact(runtime, ws, [("demo_request", 0, {})], **VP)
    with transaction(runtime.engine) as session:
        evaluate_contact(session, ws, contact_id, NOW)
        session.execute(PendingPush.__table__.delete())

    # two days: 55 -> 52.52, no threshold crossed, but the whole-number score moved: the CRMs get it
    result = jobs.decay(runtime, Outbox(workspace_id=ws, job="rules_decay", payload={}), now=NOW + timedelta(days=2))

    assert result == {"updated": 1, "reevaluated": 0, "pushed": 1}
    with transaction(runtime.engine) as session:
        assert session.get(Contact, contact_id).score == 52.52
        assert session.scalar(select(PendingPush.fields)) == ["score"]


def test_crm_update_and_message_triggers(runtime, ws, hubspot_connection, caplog):
    from hub.rules.effects import run_effects

    document = store.to_document(B2B)
    document["mql"].update(enter_score=90, exit_score=80)      # no handoff here: only the buyers triggers
    document["segments"].append({"name": "buyers", "when": "score >= 50", "triggers": [
        {"on": "enter", "action": "crm_update", "params": {"fields": {"industry": "Priority account",
                                                                      "lifecycle_stage": "lead"}}},
        {"on": "enter", "action": "message", "params": {"subject": "Hi {first_name}", "text": "Thanks"}},
        {"on": "enter", "action": "notice", "params": {"text": "{first_name} is a buyer, score {score}"}}]})
    with transaction(runtime.engine) as session:
        store.save_rules(session, ws, document)
    contact_id = add_contact(runtime, ws, [("demo_request", 0, {})], lifecycle_stage="customer",
                             consent={"email": {"granted": True}}, **VP)
    with transaction(runtime.engine) as session:
        outcome = evaluate_contact(session, ws, contact_id, NOW)
    caplog.set_level(logging.INFO, logger="hub.rules")

    counts = run_effects(runtime, outcome.effects)

    assert counts == {"done": 3, "retry": 0, "failed": 0, "skipped": 0}
    with transaction(runtime.engine) as session:
        contact = session.get(Contact, contact_id)
        effects = {e.kind: e for e in session.scalars(select(LeadEffect))}
        assert (contact.industry, contact.lifecycle_stage) == ("Priority account", "customer")  # never backwards
        assert effects["crm_update"].result == {"changed": ["industry"]}
        assert effects["message"].result == {"skipped": "no_channel"}
        assert effects["notice"].result == {"channel": "log"}
        assert "industry" in session.scalar(select(PendingPush.fields))
    assert any("Ana is a buyer, score 55" in r.getMessage() for r in caplog.records)


def test_two_transactions_scheduling_one_contact_leave_one_waiting_evaluation(runtime, ws):
    from tests.db_helpers import second_waits_for_first

    contact_id = add_contact(runtime, ws, **VP)
    second_waits_for_first(runtime.engine, lambda session: schedule_evaluation(session, ws, contact_id),
                           lambda session: schedule_evaluation(session, ws, contact_id))
    with transaction(runtime.engine) as session:
        assert session.scalar(select(func.count()).select_from(Outbox).where(Outbox.job == "evaluate_rules")) == 1
