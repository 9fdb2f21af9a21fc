"""RQ jobs for lead rules, dispatched by Outbox.job (hub.sync.relay.JOB_ROUTES points here).

- "evaluate_rules" {"contact_id"}: evaluate one contact (hub.rules.evaluation), one transaction.
- "rule_effects" {"effect_ids"}: run the effects the evaluation decided (hub.rules.effects).
- "rules_decay" {}: the periodic decay pass for a workspace, then re-evaluate contacts whose score
  crossed a watched threshold; re-arms itself every RULES_DECAY_INTERVAL_SECONDS.
- "rules_sla" {}: the periodic SLA pass (hub.rules.sla); re-arms every RULES_SLA_INTERVAL_SECONDS.
The periodic rows are armed by the first evaluation in a workspace (PERIODIC lists them).
"""
from __future__ import annotations

import logging
import time
from datetime import timedelta

from sqlalchemy import select

from hub import defaults
from hub.db import transaction
from hub.models import Outbox, utcnow
from hub.rules.decay import decay_workspace
from hub.rules.effects import run_effects
from hub.rules.evaluation import evaluate_contact
from hub.rules.sla import check_overdue
from hub.rules.store import compiled_rules

logger = logging.getLogger(__name__)

# Periodic jobs: Outbox.job -> interval in seconds.
PERIODIC = {
    "rules_decay": defaults.RULES_DECAY_INTERVAL_SECONDS,
    "rules_sla": defaults.RULES_SLA_INTERVAL_SECONDS,
}


# workspace -> monotonic time this process last found its periodic rows waiting (checked again after
# PERIODIC_CHECK_SECONDS, so evaluations do not query for them every time; a lost row is re-armed then).
_armed: dict[str, float] = {}
PERIODIC_CHECK_SECONDS = 60.0


def arm_periodic(session, workspace_id: str) -> None:
    """Make sure each periodic rules job has one waiting row for the workspace."""
    if time.monotonic() - _armed.get(workspace_id, -PERIODIC_CHECK_SECONDS) < PERIODIC_CHECK_SECONDS:
        return
    _armed[workspace_id] = time.monotonic()     # a rolled-back arming is simply redone after the interval
    waiting = set(session.scalars(select(Outbox.job).where(
        Outbox.workspace_id == workspace_id, Outbox.job.in_(list(PERIODIC)), Outbox.done_at.is_(None))))
    for job, interval in PERIODIC.items():
        if job not in waiting:
            session.add(Outbox(workspace_id=workspace_id, job=job, payload={},
                               available_at=utcnow() + timedelta(seconds=interval), attempts=0))


def evaluate(runtime, row: Outbox) -> dict:
    contact_id = (row.payload or {}).get("contact_id")
    with transaction(runtime.engine) as session:
        outcome = evaluate_contact(session, row.workspace_id, contact_id) if contact_id else None
        arm_periodic(session, row.workspace_id)
    if outcome is None:
        return {"contact_id": contact_id, "evaluated": False}
    return {"contact_id": contact_id, "score": outcome.evaluation.score, "grade": outcome.evaluation.grade,
            "entered": outcome.entered, "left": outcome.left, "effects": len(outcome.effects)}


def effects(runtime, row: Outbox) -> dict:
    return run_effects(runtime, list((row.payload or {}).get("effect_ids", ())))


def decay(runtime, row: Outbox, now=None) -> dict:
    now = now or utcnow()
    with transaction(runtime.engine) as session:
        _, rules = compiled_rules(session, row.workspace_id)
    report = decay_workspace(runtime.engine, row.workspace_id, rules.rules.decay.half_life_days, now,
                             watch=rules.rules.watched_scores())
    for contact_id in report.crossed:
        with transaction(runtime.engine) as session:
            evaluate_contact(session, row.workspace_id, contact_id, now)
    _push_scores(runtime, row.workspace_id, report.rounded_changed)
    _rearm(runtime, row, "rules_decay")
    return {"updated": report.updated, "reevaluated": len(report.crossed), "pushed": len(report.rounded_changed)}


def _push_scores(runtime, workspace_id: str, contact_ids: list[str]) -> None:
    """Hand decayed scores that moved by a whole point to the sync push (coalesced per contact)."""
    from hub.sync.push import schedule_push

    for start in range(0, len(contact_ids), defaults.RULES_DECAY_BATCH):
        with transaction(runtime.engine) as session:
            for contact_id in contact_ids[start:start + defaults.RULES_DECAY_BATCH]:
                schedule_push(session, workspace_id, contact_id, {"score"}, "rules")


def sla(runtime, row: Outbox, now=None) -> dict:
    counts = check_overdue(runtime, row.workspace_id, now)
    _rearm(runtime, row, "rules_sla")
    return counts


def _rearm(runtime, row: Outbox, job: str) -> None:
    with transaction(runtime.engine) as session:
        session.add(Outbox(workspace_id=row.workspace_id, job=job, payload={},
                           available_at=utcnow() + timedelta(seconds=PERIODIC[job]), attempts=0))


RUNNERS = {"evaluate_rules": evaluate, "rule_effects": effects, "rules_decay": decay, "rules_sla": sla}


def run_rules_outbox(outbox_ids: list[int]) -> dict:
    """The RQ job for rules outbox rows; each row is marked done when its runner returns."""
    from hub.sync.jobs import run_outbox_rows

    return run_outbox_rows(outbox_ids, RUNNERS)
