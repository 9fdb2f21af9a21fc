"""Score decay: behaviour points halve every half-life, applied by a batched periodic pass.

`decay_factor` is the one formula (scoring uses it per activity). `decay_workspace` walks a
workspace's lead scores in id order, in batches, multiplying each one's decaying part (and its
per-rule contributions) by 0.5 ** (elapsed / half-life) since its last decay; because the
factor composes (f(a) * f(b) = f(a + b)), the stored score always equals what a full re-evaluation
at that moment would give. Contacts whose score changed enough to matter are handed back so the
caller can re-check their segment and MQL state.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, update

from hub import defaults
from hub.db import transaction
from hub.models import Contact, LeadScore

logger = logging.getLogger(__name__)


def decay_factor(age: timedelta, half_life_days: float | None) -> float:
    """0.5 ** (age / half-life); 1 for no half-life or a non-positive age."""
    if not half_life_days:
        return 1.0
    seconds = age.total_seconds()
    if seconds <= 0:
        return 1.0
    return 0.5 ** (seconds / (half_life_days * 86400.0))


@dataclass
class DecayReport:
    scanned: int = 0
    updated: int = 0
    seconds: float = 0.0
    crossed: list[str] = field(default_factory=list)   # contacts whose score moved past a watched threshold
    rounded_changed: list[str] = field(default_factory=list)   # contacts whose whole-number score changed


def _decayed_contributions(contributions: dict, factor: float) -> dict:
    return {name: ({**entry, "points": round(entry["points"] * factor, 6)} if entry.get("decays") else entry)
            for name, entry in contributions.items()}


def decay_workspace(engine, workspace_id: str, half_life_days: float | None, now: datetime,
                    watch: tuple[float, ...] = (), batch_size: int = defaults.RULES_DECAY_BATCH) -> DecayReport:
    """Decay every lead score of one workspace to `now`, one transaction per batch.

    `watch` lists score thresholds (MQL enter/exit, segment bounds); a contact whose score
    crosses one is reported in `crossed`, so only those are re-evaluated. Contacts whose score
    moved by a whole point are reported in `rounded_changed`, so the CRMs get the new score
    without a write per contact per pass.
    """
    import time

    report = DecayReport()
    started = time.perf_counter()
    if not half_life_days:
        return report
    last_id = ""
    while True:
        with transaction(engine) as session:
            rows = session.execute(
                select(LeadScore.contact_id, LeadScore.decaying, LeadScore.static, LeadScore.decayed_at,
                       LeadScore.contributions)
                .where(LeadScore.workspace_id == workspace_id, LeadScore.contact_id > last_id)
                .order_by(LeadScore.contact_id).limit(batch_size)
            ).all()
            if not rows:
                break
            last_id = rows[-1][0]
            report.scanned += len(rows)
            score_updates, contact_updates = [], []
            for contact_id, decaying, static, decayed_at, contributions in rows:
                if not decaying or decayed_at >= now:
                    continue
                factor = decay_factor(now - decayed_at, half_life_days)
                new_decaying = decaying * factor
                old_total, new_total = decaying + static, new_decaying + static
                score_updates.append({"b_id": contact_id, "decaying": new_decaying, "decayed_at": now,
                                      "contributions": _decayed_contributions(contributions or {}, factor)})
                contact_updates.append({"b_id": contact_id, "score": round(new_total, 2)})
                if any(min(old_total, new_total) < t <= max(old_total, new_total) for t in watch):
                    report.crossed.append(contact_id)
                elif round(old_total) != round(new_total):
                    report.rounded_changed.append(contact_id)
            if score_updates:
                _bulk_update(session, LeadScore.__table__, LeadScore.__table__.c.contact_id, score_updates)
                _bulk_update(session, Contact.__table__, Contact.__table__.c.id, contact_updates)
                report.updated += len(score_updates)
    report.seconds = time.perf_counter() - started
    logger.info("decay workspace=%s scanned=%s updated=%s crossed=%s seconds=%.2f", workspace_id,
                report.scanned, report.updated, len(report.crossed), report.seconds)
    return report


def _bulk_update(session, table, key_column, rows: list[dict]) -> None:
    """One executemany UPDATE ... WHERE key = :b_id for the batch."""
    from sqlalchemy import bindparam

    columns = [name for name in rows[0] if name != "b_id"]
    statement = update(table).where(key_column == bindparam("b_id")).values(
        {name: bindparam(name) for name in columns})
    session.connection().execute(statement, rows)
