"""Decay over simulated weeks, MQL hysteresis, and forward-only lifecycle in the CRMs (pure logic)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from hub.rules.context import ActivityFact
from hub.rules.decay import decay_factor
from hub.rules.mql import MqlPolicy, forward_lead_status, forward_lifecycle
from hub.rules.presets import B2B
from hub.rules.ruleset import CompiledRules
from hub.rules.segments import Segment, SegmentEvaluator

START = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
VP = {"email": "ana@acme.io", "title": "VP Marketing", "company_size": 500}


def test_decay_halves_every_half_life():
    assert decay_factor(timedelta(days=30), 30) == 0.5
    assert decay_factor(timedelta(days=90), 30) == 0.125
    assert decay_factor(timedelta(days=-1), 30) == 1.0
    assert decay_factor(timedelta(days=400), None) == 1.0


def test_decay_composes_so_a_periodic_pass_equals_a_full_evaluation():
    step_by_step = 1.0
    for _ in range(10):
        step_by_step *= decay_factor(timedelta(days=3.7), 30)
    assert step_by_step == pytest.approx(decay_factor(timedelta(days=37), 30), rel=1e-12)


def test_weekly_evaluations_decay_the_score_and_the_lead_leaves_mql_below_the_exit_score():
    rules = CompiledRules(B2B)
    activities = [ActivityFact("form_submit", START, {"form": "demo-request"})]
    members: set[str] = set()
    weekly = []
    for week in range(6):
        result = rules.evaluate(VP, activities, members, START + timedelta(weeks=week))
        members = result.segments.members
        weekly.append((result.score, result.mql))

    # 55 * 0.5 ** (7 w / 30 d): 55, 46.79, 39.80, 33.86, ...; MQL from week 0, kept at 46.79 and 39.80
    # (below the entry score 50 but above the exit score 35: hysteresis), left at 33.86.
    assert [score for score, _ in weekly] == [55.0, 46.79, 39.8, 33.86, 28.8, 24.5]
    assert [mql for _, mql in weekly] == [True, True, True, False, False, False]


def test_hysteresis_stops_flapping_around_the_entry_threshold():
    policy = MqlPolicy(enter_score=50, exit_score=35)
    with_hysteresis = SegmentEvaluator((policy.as_segment(),))
    without = SegmentEvaluator((Segment("mql", "score >= 50 and grade in ('A', 'B')"),))
    wobble = [51, 49, 52, 48, 50, 47, 53, 36, 34, 49, 50]

    def transitions(evaluator):
        members, changes = set(), 0
        for score in wobble:
            change = evaluator.evaluate({"score": score, "grade": "B"}, members)
            changes += len(change.entered) + len(change.left)
            members = change.members
        return changes

    # with hysteresis: enter at 51, leave at 34, enter again at 50
    assert transitions(with_hysteresis) == 3
    assert transitions(without) == 9


def test_grade_hysteresis_keeps_a_c_grade_mql_but_does_not_admit_one():
    policy = SegmentEvaluator((MqlPolicy().as_segment(),))
    assert policy.evaluate({"score": 90, "grade": "C"}, set()).entered == []
    assert policy.evaluate({"score": 90, "grade": "C"}, {"mql"}).members == {"mql"}
    assert policy.evaluate({"score": 90, "grade": "D"}, {"mql"}).left == ["mql"]


@pytest.mark.parametrize("current, expected", [
    (None, "marketingqualifiedlead"),
    ("subscriber", "marketingqualifiedlead"),
    ("lead", "marketingqualifiedlead"),
    ("marketingqualifiedlead", None),
    ("salesqualifiedlead", None),
    ("customer", None),
    ("some_custom_stage", None),
])
def test_hubspot_lifecycle_only_moves_forward(current, expected):
    assert forward_lifecycle(current) == expected


@pytest.mark.parametrize("current, expected", [
    (None, "Working - Contacted"),
    ("Open - Not Contacted", "Working - Contacted"),
    ("Working - Contacted", None),
    ("Closed - Converted", None),
    ("Closed - Not Converted", None),
])
def test_salesforce_lead_status_follows_the_picklist_map_forward_only(current, expected):
    assert forward_lead_status(current) == expected
