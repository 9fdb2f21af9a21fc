"""Evaluating one contact against its workspace's live rules, in the caller's transaction.

Loads the contact (row-locked on PostgreSQL), its recent activities and open segment memberships,
runs the pure evaluation (hub.rules.ruleset), and writes back in the same transaction: score,
grade, reasons, MQL flag, the decay split (lead_score), segment entries/exits, lifecycle stage
(forward only), the lead effects its triggers decided (each with an idempotency key), a push of the
changed fields to the CRMs (hub.sync.push) and an Outbox row that runs the effects.
`explain` and `dry_run` use the same evaluation without writing.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select

from hub import defaults
from hub.db import is_postgres
from hub.models import Activity, Contact, LeadEffect, LeadScore, Outbox, SegmentMembership, SyncLog, utcnow
from hub.rules.context import ActivityFact
from hub.rules.mql import MQL_STAGE, forward_lifecycle
from hub.rules.ruleset import CompiledRules, Evaluation
from hub.rules.scoring import reason_text
from hub.rules.store import compiled_rules

logger = logging.getLogger(__name__)

EFFECTS_JOB = "rule_effects"
PUSHED_FIELDS = ("score", "grade", "score_reasons", "lifecycle_stage")


@dataclass
class Outcome:
    contact_id: str
    evaluation: Evaluation
    entered: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    effects: list[int] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)


def load_activities(session, contact_id: str, now: datetime) -> list[ActivityFact]:
    since = now - timedelta(days=defaults.RULES_ACTIVITY_LOOKBACK_DAYS)
    rows = session.execute(
        select(Activity.kind, Activity.occurred_at, Activity.properties)
        .where(Activity.contact_id == contact_id, Activity.occurred_at >= since, Activity.occurred_at <= now)
        .order_by(Activity.occurred_at, Activity.id)).all()
    return [ActivityFact(kind, occurred_at, properties or {}) for kind, occurred_at, properties in rows]


def open_memberships(session, contact_id: str) -> dict[str, SegmentMembership]:
    rows = session.scalars(select(SegmentMembership).where(
        SegmentMembership.contact_id == contact_id, SegmentMembership.left_at.is_(None)))
    return {row.segment: row for row in rows}


def _lock_contact(session, workspace_id: str, contact_id: str) -> Contact | None:
    query = select(Contact).where(Contact.id == contact_id, Contact.workspace_id == workspace_id)
    if is_postgres(session.get_bind()):
        query = query.with_for_update()
    return session.scalar(query)


def _contributions(evaluation: Evaluation, rules: CompiledRules) -> dict:
    decays = {rule.name: rule.decays for rule in rules.rules.activity_rules}
    return {f.rule: {"label": f.label, "points": round(f.points, 6), "decays": decays.get(f.rule, False)}
            for f in evaluation.score_result.contributions.values()}


def explain(session, workspace_id: str, contact_id: str, now: datetime | None = None,
            rules: CompiledRules | None = None) -> Evaluation | None:
    """Evaluate without writing (for `hub rules test` and the dry run)."""
    now = now or utcnow()
    contact = session.scalar(select(Contact).where(Contact.id == contact_id, Contact.workspace_id == workspace_id))
    if contact is None:
        return None
    if rules is None:
        _, rules = compiled_rules(session, workspace_id)
    lead = session.get(LeadScore, contact_id)
    return rules.evaluate(contact, load_activities(session, contact_id, now), set(open_memberships(session, contact_id)),
                          now, since=lead.recycled_at if lead else None)


def evaluate_contact(session, workspace_id: str, contact_id: str, now: datetime | None = None) -> Outcome | None:
    """Evaluate and apply, in the caller's transaction. None when the contact is gone."""
    from hub.sync.push import schedule_push
    from hub.sync.settings import entered_create_segment

    now = now or utcnow()
    contact = _lock_contact(session, workspace_id, contact_id)
    if contact is None:
        return None
    version, rules = compiled_rules(session, workspace_id)
    lead = session.get(LeadScore, contact_id)
    if lead is None:
        lead = LeadScore(contact_id=contact_id, workspace_id=workspace_id, decaying=0.0, static=0.0, fit_points=0.0,
                         contributions={}, decayed_at=now)
        session.add(lead)
    memberships = open_memberships(session, contact_id)
    evaluation = rules.evaluate(contact, load_activities(session, contact_id, now), set(memberships), now,
                                since=lead.recycled_at)
    outcome = Outcome(contact_id, evaluation)

    lead.decaying = evaluation.score_result.decaying
    lead.static = evaluation.score_result.static
    lead.fit_points = evaluation.grade_result.points
    lead.contributions = _contributions(evaluation, rules)
    lead.decayed_at = now
    lead.evaluated_at = now
    lead.rule_version = version
    outcome.changed = _apply_to_contact(contact, evaluation)
    _apply_segments(session, contact, rules, evaluation, memberships, now, outcome)
    push_fields = set(outcome.changed)
    if entered_create_segment(session, workspace_id, outcome.entered):
        push_fields.add("email")            # creation plans every field; this makes sure a push is due
    if push_fields:
        schedule_push(session, workspace_id, contact_id, push_fields, "rules")
    if outcome.effects:
        # After the push's coalescing window, so a new contact exists in the CRMs before its handoff.
        delay = getattr(defaults, "SYNC_PUSH_COALESCE_SECONDS", 0.0) + defaults.RULES_EFFECT_DELAY_SECONDS
        session.add(Outbox(workspace_id=workspace_id, job=EFFECTS_JOB, payload={"effect_ids": outcome.effects},
                           created_at=now, available_at=utcnow() + timedelta(seconds=delay), attempts=0))
    return outcome


def _apply_to_contact(contact: Contact, evaluation: Evaluation) -> set[str]:
    changed = set()
    # The contact keeps the reasons as the CRM shows them; per-rule points live in lead_score.contributions.
    updates = {"score": evaluation.score, "grade": evaluation.grade,
               "score_reasons": [reason_text(r) for r in evaluation.reasons]}
    for name, value in updates.items():
        if getattr(contact, name) != value:
            setattr(contact, name, value)
            changed.add(name)
    contact.mql = evaluation.mql
    return changed


def _apply_segments(session, contact: Contact, rules: CompiledRules, evaluation: Evaluation,
                    memberships: dict[str, SegmentMembership], now: datetime, outcome: Outcome) -> None:
    change = evaluation.segments
    mql_segment = rules.rules.mql.segment
    for name in change.left:
        row = memberships[name]
        row.left_at = now
        outcome.left.append(name)
        _add_effects(session, contact, rules, name, "leave", row.id, outcome)
    for name in change.entered:
        row = SegmentMembership(workspace_id=contact.workspace_id, contact_id=contact.id, segment=name, entered_at=now)
        session.add(row)
        session.flush()
        outcome.entered.append(name)
        if name == mql_segment:
            _became_mql(session, contact, evaluation, outcome)
        _add_effects(session, contact, rules, name, "enter", row.id, outcome)


def _became_mql(session, contact: Contact, evaluation: Evaluation, outcome: Outcome) -> None:
    stage = forward_lifecycle(contact.lifecycle_stage, MQL_STAGE)
    if stage:
        contact.lifecycle_stage = stage
        outcome.changed.add("lifecycle_stage")
    session.add(SyncLog(workspace_id=contact.workspace_id, target="rules", operation="mql", object_ids=[contact.id],
                        status="decision", error=f"score {evaluation.score}, grade {evaluation.grade}"))
    logger.info("contact %s is an MQL (score %s, grade %s)", contact.id, evaluation.score, evaluation.grade)


def _add_effects(session, contact: Contact, rules: CompiledRules, segment: str, on: str, membership_id: int,
                 outcome: Outcome) -> None:
    for index, trigger in enumerate(rules.segments.triggers(segment, on)):
        key = f"{trigger.action}:{segment}:{on}:{membership_id}:{index}"
        effect = LeadEffect(workspace_id=contact.workspace_id, contact_id=contact.id, kind=trigger.action,
                            params={**trigger.params, "segment": segment, "on": on}, idempotency_key=key,
                            status="pending", attempts=0, result={})
        session.add(effect)
        session.flush()
        outcome.effects.append(effect.id)
