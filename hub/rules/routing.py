"""Owner assignment: existing account owner -> territory -> weighted round robin (caps, out of office).

The round robin is "smooth weighted round robin" (as in nginx): every pick adds each eligible
rep's weight to its credit, the rep with the most credit wins and pays back the total. Over any
run the shares match the weights exactly (up to one pick), with no randomness to test around.
A rep at its daily cap or out of office is not eligible and earns no credit meanwhile. The
credit is stored on the rep row, read under a row lock, so concurrent workers share one sequence.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from datetime import datetime, time, timezone

from sqlalchemy import func, select

from hub.db import is_postgres
from hub.models import Assignment, Contact, Rep
from hub.rules.context import FREE_EMAIL_DOMAINS, PROFILE_NAMES
from hub.rules.expressions import compile_expression

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Territory:
    """Leads whose profile matches `when` (country/state/size...) go to these reps, round robin."""

    name: str
    when: str
    reps: tuple[str, ...]


@dataclass(frozen=True)
class RoutingPolicy:
    territories: tuple[Territory, ...] = ()
    account_owner_first: bool = True


@dataclass
class RepSlot:
    """What the round robin needs to know about one rep."""

    id: int
    email: str
    weight: float
    credit: float = 0.0
    daily_cap: int | None = None
    assigned_today: int = 0
    out_of_office_until: datetime | None = None
    active: bool = True

    def available(self, now: datetime) -> bool:
        if not self.active or self.weight <= 0:
            return False
        if self.out_of_office_until is not None and self.out_of_office_until > now:
            return False
        return self.daily_cap is None or self.assigned_today < self.daily_cap


def pick_round_robin(slots: list[RepSlot], now: datetime) -> RepSlot | None:
    """Pick one rep (smooth weighted round robin); mutates credits and today's count."""
    eligible = [slot for slot in slots if slot.available(now)]
    if not eligible:
        return None
    total = 0.0
    for slot in eligible:
        slot.credit += slot.weight
        total += slot.weight
    chosen = max(eligible, key=lambda s: (s.credit, -s.id))
    chosen.credit -= total
    chosen.assigned_today += 1
    return chosen


@dataclass
class Choice:
    rep: Rep | None
    owner_email: str | None
    reason: str
    considered: list[str] = field(default_factory=list)


@lru_cache(maxsize=512)
def _compiled(source: str):
    return compile_expression(source, PROFILE_NAMES)


def _day_start(now: datetime) -> datetime:
    return datetime.combine(now.date(), time.min, tzinfo=timezone.utc)


def _load_reps(session, workspace_id: str) -> list[Rep]:
    query = select(Rep).where(Rep.workspace_id == workspace_id).order_by(Rep.id)
    if is_postgres(session.get_bind()):
        query = query.with_for_update()
    return list(session.scalars(query))


def _assigned_today(session, workspace_id: str, now: datetime) -> dict[int, int]:
    rows = session.execute(
        select(Assignment.rep_id, func.count()).where(
            Assignment.workspace_id == workspace_id, Assignment.assigned_at >= _day_start(now),
            Assignment.rep_id.is_not(None))
        .group_by(Assignment.rep_id)).all()
    return {rep_id: count for rep_id, count in rows}


def _slot(rep: Rep, counts: dict[int, int]) -> RepSlot:
    return RepSlot(rep.id, rep.email, rep.weight, rep.rr_credit or 0.0, rep.daily_cap, counts.get(rep.id, 0),
                   rep.out_of_office_until, rep.active)


def account_owner(session, contact: Contact) -> str | None:
    """The owner of the contact's account: its own owner, else the owner of a colleague (same company domain)."""
    if contact.owner:
        return contact.owner
    email = (contact.email or "").lower()
    domain = email.rsplit("@", 1)[1] if "@" in email else None
    if not domain or domain in FREE_EMAIL_DOMAINS:
        return None
    return session.scalar(
        select(Contact.owner).where(Contact.workspace_id == contact.workspace_id, Contact.owner.is_not(None),
                                    Contact.id != contact.id, Contact.email.like(f"%@{domain}"))
        .order_by(Contact.created_at).limit(1))


def choose_owner(session, contact: Contact, profile: dict, policy: RoutingPolicy, now: datetime,
                 exclude: frozenset[str] = frozenset()) -> Choice:
    """Pick the owner for `contact` (rows locked until the caller's transaction ends)."""
    reps = _load_reps(session, contact.workspace_id)
    counts = _assigned_today(session, contact.workspace_id, now)
    slots = {rep.email.lower(): _slot(rep, counts) for rep in reps}
    by_email = {rep.email.lower(): rep for rep in reps}
    considered: list[str] = []
    if policy.account_owner_first:
        owner = (account_owner(session, contact) or "").lower()
        if owner and owner not in exclude:
            slot = slots.get(owner)
            # The account owner keeps the account even past a daily cap; only absence moves it on.
            away = slot is not None and (not slot.active or (slot.out_of_office_until is not None
                                                            and slot.out_of_office_until > now))
            if not away:
                return Choice(by_email.get(owner), owner, "account_owner", considered)
            considered.append(f"account owner {owner} unavailable")
    pool = [slot for email, slot in slots.items() if email not in exclude]
    reason = "round_robin"
    for territory in policy.territories:
        if _compiled(territory.when).test(profile):
            members = {email.lower() for email in territory.reps}
            territory_pool = [slot for slot in pool if slot.email.lower() in members]
            if any(slot.available(now) for slot in territory_pool):
                pool, reason = territory_pool, f"territory:{territory.name}"
                break
            considered.append(f"territory {territory.name} has no available rep")
    chosen = pick_round_robin(pool, now)
    for email, slot in slots.items():
        by_email[email].rr_credit = slot.credit
    if chosen is None:
        return Choice(None, None, "no_rep_available", considered)
    return Choice(by_email[chosen.email.lower()], chosen.email, reason, considered)
