"""Behaviour score: points per activity kind, per-rule caps, negative points, decay by half-life.

Rules are data: `ActivityRule` (points for an activity of one kind, optionally only when its
expression holds, capped per UTC day and in total) and `ProfileRule` (points for who the contact
is: competitor domain, job seeker, ...). A `Scorer` compiles a rule tuple once and scores many
contacts. The score splits into a decaying part (behaviour, halved every half-life) and a static
part (profile rules and activity rules with `decays=False`, e.g. an unsubscribe penalty); the
periodic decay pass (hub.rules.decay) multiplies the decaying part, which gives exactly what a full
re-evaluation would.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from hub.rules.context import ACTIVITY_NAMES, PROFILE_NAMES, ActivityFact, activity_context
from hub.rules.decay import decay_factor
from hub.rules.expressions import TRUE, Expression, compile_expression


@dataclass(frozen=True)
class ActivityRule:
    """`points` for each activity of `kind` matching `when`; caps bound the points, not the count."""

    name: str
    kind: str
    points: float
    when: str = ""
    daily_cap: float | None = None      # at most this many points (by magnitude) per UTC day
    total_cap: float | None = None      # at most this many points (by magnitude) ever
    decays: bool = True
    label: str = ""


@dataclass(frozen=True)
class ProfileRule:
    """`points` once when `when` holds for the contact's profile (never decays)."""

    name: str
    points: float
    when: str
    label: str = ""


@dataclass(frozen=True)
class Fired:
    """One rule's contribution to a score or grade (points already decayed and capped)."""

    rule: str
    label: str
    points: float
    count: int = 1


@dataclass
class ScoreResult:
    decaying: float = 0.0
    static: float = 0.0
    contributions: dict[str, Fired] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return self.decaying + self.static

    def fired(self) -> list[Fired]:
        """Contributions, largest magnitude first (ties by rule name)."""
        return sorted(self.contributions.values(), key=lambda f: (-abs(f.points), f.rule))


def _capped(points: float, used: float, cap: float | None) -> float:
    if cap is None:
        return points
    room = max(0.0, cap - abs(used))
    return points if abs(points) <= room else (room if points > 0 else -room)


class _CompiledActivityRule:
    __slots__ = ("rule", "when", "label")

    def __init__(self, rule: ActivityRule, allowed: frozenset[str]):
        self.rule = rule
        self.when: Expression = compile_expression(rule.when, allowed)
        self.label = rule.label or rule.name


class Scorer:
    """Compiles a rule tuple once; `score()` is pure and fast (bench/rules measures it)."""

    def __init__(self, activity_rules: tuple[ActivityRule, ...], profile_rules: tuple[ProfileRule, ...],
                 half_life_days: float | None, list_names: frozenset[str] = frozenset()):
        allowed_activity = PROFILE_NAMES | ACTIVITY_NAMES | list_names
        self.by_kind: dict[str, list[_CompiledActivityRule]] = {}
        for rule in activity_rules:
            self.by_kind.setdefault(rule.kind, []).append(_CompiledActivityRule(rule, allowed_activity))
        self.profile_rules = [(r, compile_expression(r.when, PROFILE_NAMES | list_names)) for r in profile_rules]
        self.half_life_days = half_life_days

    def score(self, profile: dict, activities: list[ActivityFact], now: datetime,
              since: datetime | None = None) -> ScoreResult:
        """Score `activities` (any order) as of `now`; activities before `since` (a recycle) are ignored."""
        result = ScoreResult()
        sums: dict[str, list] = {}                      # rule -> [points, count, label]
        daily_used: dict[tuple[str, object], float] = {}
        total_used: dict[str, float] = {}
        decaying = static = 0.0
        for activity in sorted(activities, key=_occurred_at):
            rules = self.by_kind.get(activity.kind)
            if not rules or (since is not None and activity.occurred_at < since):
                continue
            context = None                              # built only when a rule of this kind needs it
            weight = None
            for compiled in rules:
                rule = compiled.rule
                if compiled.when is not TRUE:
                    if context is None:
                        context = activity_context(profile, activity, now)
                    if not compiled.when.fn(context):
                        continue
                points = rule.points
                if rule.daily_cap is not None:
                    key = (rule.name, activity.occurred_at.date())
                    points = _capped(points, daily_used.get(key, 0.0), rule.daily_cap)
                    daily_used[key] = daily_used.get(key, 0.0) + points
                if rule.total_cap is not None:
                    points = _capped(points, total_used.get(rule.name, 0.0), rule.total_cap)
                    total_used[rule.name] = total_used.get(rule.name, 0.0) + points
                if not points:
                    continue
                if rule.decays:
                    if weight is None:
                        weight = decay_factor(now - activity.occurred_at, self.half_life_days)
                    points *= weight
                    decaying += points
                else:
                    static += points
                entry = sums.get(rule.name)
                if entry is None:
                    sums[rule.name] = [points, 1, compiled.label]
                else:
                    entry[0] += points
                    entry[1] += 1
        for rule, when in self.profile_rules:
            if when.fn(profile):
                static += rule.points
                sums[rule.name] = [rule.points, 1, rule.label or rule.name]
        result.decaying, result.static = decaying, static
        result.contributions = {name: Fired(name, label, points, count) for name, (points, count, label) in sums.items()}
        return result


def _occurred_at(activity: ActivityFact) -> datetime:
    return activity.occurred_at


def top_reasons(fired: list[Fired], limit: int = 3) -> list[dict]:
    """The `limit` largest contributions as {rule, label, points} (points rounded to 1 decimal)."""
    reasons = []
    for item in fired:
        rounded = round(item.points, 1)
        if rounded == 0:
            continue
        reasons.append({"rule": item.rule, "label": item.label, "points": rounded})
        if len(reasons) == limit:
            break
    return reasons


def reason_text(reason: dict) -> str:
    """`Demo requested +55`: how one reason reads in the CRM."""
    return f"{reason['label']} {'+' if reason['points'] >= 0 else ''}{reason['points']:g}"


def format_reasons(reasons: list) -> str:
    """One line for a CRM text field: `Demo request +40; Pricing page visits +10` (dicts or texts)."""
    return "; ".join(r if isinstance(r, str) else reason_text(r) for r in reasons)
