"""A workspace's whole rule set as one frozen value, and its compiled form (compile once, evaluate many).

`RuleSet` gathers the rule tuples (activity and profile scoring, grading, segments) with the
policies (decay, MQL, routing, SLA) and named lists. `CompiledRules.evaluate()` is the pure
evaluation used by the worker, `hub rules test`, the dry run and bench/rules.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from hub.rules.context import ActivityFact, profile_context
from hub.rules.grading import DEFAULT_BANDS, Grader, GradeBand, GradeResult, GradeRule
from hub.rules.mql import MqlPolicy
from hub.rules.routing import RoutingPolicy
from hub.rules.scoring import ActivityRule, Fired, ProfileRule, Scorer, ScoreResult, top_reasons
from hub.rules.segments import Segment, SegmentChange, SegmentEvaluator

MODELS = ("b2b", "ecommerce")
SLA_ACTIONS = ("reassign", "escalate")


@dataclass(frozen=True)
class DecayPolicy:
    half_life_days: float | None = 30.0


@dataclass(frozen=True)
class SlaPolicy:
    """An MQL's owner must act within `hours`; then the lead is reassigned (or escalated)."""

    hours: float = 24.0
    action: str = "reassign"
    max_reassignments: int = 2            # after that, escalate instead of reassigning again
    escalate_to: str | None = None        # notice channel text names this person


@dataclass(frozen=True)
class RuleSet:
    model: str
    activity_rules: tuple[ActivityRule, ...]
    profile_rules: tuple[ProfileRule, ...]
    grade_rules: tuple[GradeRule, ...]
    grade_bands: tuple[GradeBand, ...] = DEFAULT_BANDS
    segments: tuple[Segment, ...] = ()
    mql: MqlPolicy = MqlPolicy()
    decay: DecayPolicy = DecayPolicy()
    routing: RoutingPolicy = RoutingPolicy()
    sla: SlaPolicy = SlaPolicy()
    lists: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False)

    def list_values(self) -> dict[str, frozenset]:
        return {name: frozenset(v.lower() for v in values) for name, values in self.lists.items()}

    def all_segments(self) -> tuple[Segment, ...]:
        return (self.mql.as_segment(),) + tuple(self.segments)

    def watched_scores(self) -> tuple[float, ...]:
        """Score thresholds a decay pass must notice being crossed."""
        return (self.mql.enter_score, self.mql.exit_score)


@dataclass
class Evaluation:
    score: float
    grade: str
    score_result: ScoreResult
    grade_result: GradeResult
    segments: SegmentChange
    mql: bool
    reasons: list[dict]

    def fired(self) -> list[Fired]:
        return self.score_result.fired()


class CompiledRules:
    """A RuleSet with every expression compiled; safe to share between evaluations."""

    def __init__(self, rules: RuleSet, top: int = 3):
        self.rules = rules
        self.lists = rules.list_values()
        names = frozenset(self.lists)
        self.scorer = Scorer(rules.activity_rules, rules.profile_rules, rules.decay.half_life_days, names)
        self.grader = Grader(rules.grade_rules, rules.grade_bands, names)
        self.segments = SegmentEvaluator(rules.all_segments(), names)
        self.top = top

    def profile(self, contact, activities: list[ActivityFact], now: datetime) -> dict:
        return profile_context(contact, activities, now, self.lists)

    def evaluate(self, contact, activities: list[ActivityFact], current_segments: set[str], now: datetime,
                 since: datetime | None = None) -> Evaluation:
        profile = self.profile(contact, activities, now)
        score_result = self.scorer.score(profile, activities, now, since)
        grade_result = self.grader.grade(profile)
        score = round(score_result.total, 2)
        context = dict(profile)
        context.update(score=score, grade=grade_result.grade, behaviour_score=score_result.decaying,
                       fit_points=grade_result.points, mql=self.rules.mql.segment in current_segments)
        change = self.segments.evaluate(context, current_segments)
        return Evaluation(score, grade_result.grade, score_result, grade_result, change,
                          self.rules.mql.segment in change.members, top_reasons(score_result.fired(), self.top))
