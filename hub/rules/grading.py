"""Fit grade A-F from profile data (B2B: BANT; e-commerce: RFM plus duration).

Rules are data: each `GradeRule` belongs to one dimension (budget, authority, need, timing;
recency, frequency, monetary, duration); within a dimension the rules are tried in order and the
first that holds gives its points (so bands read top-down: ">= 1000 employees: 30, >= 200: 25, ...").
The points of all dimensions add up, and `GradeBand`s (highest first) turn the total into a letter.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from hub.rules.context import PROFILE_NAMES
from hub.rules.expressions import Expression, compile_expression
from hub.rules.scoring import Fired


@dataclass(frozen=True)
class GradeRule:
    name: str
    dimension: str
    points: float
    when: str = ""
    label: str = ""


@dataclass(frozen=True)
class GradeBand:
    grade: str
    min_points: float


DEFAULT_BANDS = (GradeBand("A", 80), GradeBand("B", 60), GradeBand("C", 40), GradeBand("D", 20),
                 GradeBand("E", 10), GradeBand("F", float("-inf")))
GRADES = tuple(band.grade for band in DEFAULT_BANDS)


@dataclass
class GradeResult:
    grade: str
    points: float
    fired: list[Fired] = field(default_factory=list)


class Grader:
    """Compiles grade rules once; `grade()` is pure."""

    def __init__(self, rules: tuple[GradeRule, ...], bands: tuple[GradeBand, ...] = DEFAULT_BANDS,
                 list_names: frozenset[str] = frozenset()):
        self.dimensions: dict[str, list[tuple[GradeRule, Expression]]] = {}
        for rule in rules:
            self.dimensions.setdefault(rule.dimension, []).append(
                (rule, compile_expression(rule.when, PROFILE_NAMES | list_names)))
        self.bands = tuple(sorted(bands, key=lambda b: -b.min_points))

    def grade(self, profile: dict) -> GradeResult:
        total, fired = 0.0, []
        for dimension_rules in self.dimensions.values():
            for rule, when in dimension_rules:
                if when.fn(profile):
                    total += rule.points
                    fired.append(Fired(rule.name, rule.label or rule.name, rule.points))
                    break
        return GradeResult(self.letter(total), total, fired)

    def letter(self, points: float) -> str:
        for band in self.bands:
            if points >= band.min_points:
                return band.grade
        return self.bands[-1].grade
