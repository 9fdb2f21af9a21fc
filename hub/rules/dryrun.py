"""What a rule change would do, before it is saved: a dry run over every contact of a workspace.

Contacts are read in chunks (RULES_DRY_RUN_BATCH) with their activities and open memberships, each
is evaluated with the proposed rules against its current state, and the report counts who would
enter or leave each segment, gain or lose MQL, and change score or grade. Nothing is written.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select

from hub import defaults
from hub.models import Activity, Contact, LeadScore, SegmentMembership, utcnow
from hub.rules.context import ActivityFact
from hub.rules.ruleset import CompiledRules


@dataclass
class DryRunReport:
    contacts: int = 0
    mql_gained: int = 0
    mql_lost: int = 0
    score_changed: int = 0
    grade_changed: int = 0
    entering: Counter = field(default_factory=Counter)
    leaving: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {"contacts": self.contacts, "mql_gained": self.mql_gained, "mql_lost": self.mql_lost,
                "score_changed": self.score_changed, "grade_changed": self.grade_changed,
                "entering": dict(sorted(self.entering.items())), "leaving": dict(sorted(self.leaving.items()))}


def _chunk_state(session, ids: list[str], now: datetime):
    since = now - timedelta(days=defaults.RULES_ACTIVITY_LOOKBACK_DAYS)
    activities: dict[str, list[ActivityFact]] = {cid: [] for cid in ids}
    for contact_id, kind, at, properties in session.execute(
            select(Activity.contact_id, Activity.kind, Activity.occurred_at, Activity.properties)
            .where(Activity.contact_id.in_(ids), Activity.occurred_at >= since, Activity.occurred_at <= now)
            .order_by(Activity.occurred_at, Activity.id)):
        activities[contact_id].append(ActivityFact(kind, at, properties or {}))
    members: dict[str, set[str]] = {cid: set() for cid in ids}
    for contact_id, segment in session.execute(select(SegmentMembership.contact_id, SegmentMembership.segment).where(
            SegmentMembership.contact_id.in_(ids), SegmentMembership.left_at.is_(None))):
        members[contact_id].add(segment)
    recycled = dict(session.execute(select(LeadScore.contact_id, LeadScore.recycled_at).where(
        LeadScore.contact_id.in_(ids), LeadScore.recycled_at.is_not(None))).all())
    return activities, members, recycled


def dry_run(session, workspace_id: str, rules: CompiledRules, now: datetime | None = None,
            batch_size: int = defaults.RULES_DRY_RUN_BATCH) -> DryRunReport:
    now = now or utcnow()
    report = DryRunReport()
    mql = rules.rules.mql.segment
    last_id = ""
    while True:
        contacts = list(session.scalars(select(Contact).where(Contact.workspace_id == workspace_id, Contact.id > last_id)
                                        .order_by(Contact.id).limit(batch_size)))
        if not contacts:
            return report
        last_id = contacts[-1].id
        activities, members, recycled = _chunk_state(session, [c.id for c in contacts], now)
        for contact in contacts:
            current = members[contact.id]
            result = rules.evaluate(contact, activities[contact.id], current, now, since=recycled.get(contact.id))
            report.contacts += 1
            report.entering.update(result.segments.entered)
            report.leaving.update(result.segments.left)
            report.mql_gained += mql in result.segments.entered
            report.mql_lost += mql in result.segments.left
            report.score_changed += result.score != contact.score
            report.grade_changed += result.grade != contact.grade
        session.expunge_all()
