"""Scores and grades of both default models, hand-computed: one table row per contact fixture.

Each row: the contact, its activities (days before NOW), and the exact expected score, grade,
rules that fired with their points, and the segments entered. B2B half-life 30 days,
e-commerce 60 days; decayed points are p * 0.5 ** (age_days / half_life).
"""
from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest

from hub.rules.context import ActivityFact
from hub.rules.presets import B2B, ECOMMERCE
from hub.rules.ruleset import CompiledRules
from hub.rules.scoring import format_reasons

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)

B2B_RULES = CompiledRules(dataclasses.replace(B2B, lists={**B2B.lists, "competitor_domains": ("rival.com",)}))
ECOMMERCE_RULES = CompiledRules(ECOMMERCE)


def act(kind: str, days_ago: float = 0, **properties) -> ActivityFact:
    return ActivityFact(kind, NOW - timedelta(days=days_ago), properties)


def decayed(points: float, days: float, half_life: float) -> float:
    return points * 0.5 ** (days / half_life)


CASES = [
    # id, rules, contact, activities, score, grade, fired {rule: points}, segments entered
    ("b2b_vp_demo_form", B2B_RULES,
     {"email": "ana@acme.io", "title": "VP Marketing", "company_size": 500},
     [act("form_submit", form="demo-request")],
     55.0, "B",   # score 10 + 45; fit: budget 30 (200-999) + authority 35 (VP) = 65 -> B
     {"demo_form": 45, "form_submit": 10, "size_200": 30, "title_exec": 35},
     ["mql"]),
    ("b2b_page_views_capped", B2B_RULES,
     {"email": "dev@shop.io", "title": "Director of IT", "company_size": 60, "industry": "Software"},
     [act("page_view", url="/pricing"), act("page_view", url="/pricing")]
     + [act("page_view", url="/blog") for _ in range(5)],
     13.0, "B",   # page views 1/day capped at 3, pricing 5 x 2 = 10; fit 20 + 25 + 15 = 60 -> B
     {"pricing_page": 10, "page_view": 3, "size_50": 20, "title_director": 25, "industry_target": 15},
     ["nurture"]),
    ("b2b_decayed", B2B_RULES,
     {"email": "mo@retail.example", "title": "Marketing Manager", "company_size": 20, "industry": "Retail",
      "custom": {"timeline": "This year"}},
     [act("demo_request", 30), act("email_click", 60)],
     28.25, "D",  # 55 * 0.5 + 3 * 0.25; fit 10 + 15 + 5 + 8 = 38 -> D
     {"demo_request": 27.5, "email_click": 0.75, "size_10": 10, "title_manager": 15, "industry_known": 5,
      "timing_later": 8},
     []),
    ("b2b_negatives", B2B_RULES,
     {"email": "sam@rival.com", "title": "Student"},
     [act("form_submit", form="careers"), act("unsubscribe", 10)],
     -180.0, "F",  # 10 - 40 (job form) - 20 (unsubscribe, no decay) - 100 (competitor) - 30 (job seeker title)
     {"form_submit": 10, "careers_form": -40, "unsubscribe": -20, "competitor": -100, "job_seeker_title": -30,
      "title_any": 5},
     []),
    ("b2b_total_cap_grade_a", B2B_RULES,
     {"email": "cto@big.io", "title": "CTO", "company_size": 5000, "industry": "SaaS",
      "custom": {"timeline": "this quarter"}},
     [act("demo_request"), act("demo_request"), act("demo_request")],
     110.0, "A",  # 55 + 55, third capped (total 110); fit 35 + 35 + 15 + 15 = 100 -> A
     {"demo_request": 110, "size_1000": 35, "title_exec": 35, "industry_target": 15, "timing_now": 15},
     ["mql", "hot"]),
    ("b2b_personal_email", B2B_RULES,
     {"email": "jo@gmail.com", "title": "Owner", "company_size": 3},
     [act("email_open", 0), act("email_open", 0), act("email_open", 0)],
     -3.0, "D",   # opens 1/day capped at 2, personal email -5; fit: authority 35 (owner), budget 0 -> D
     {"email_open": 2, "personal_email": -5, "title_exec": 35},
     []),
    ("ecommerce_loyal", ECOMMERCE_RULES,
     {"email": "lee@example.org"},
     [act("purchase", d, amount=a) for d, a in ((400, 100), (300, 200), (200, 150), (100, 250), (50, 100), (10, 300))],
     28.61,  "A",  # 15 * sum(0.5 ** (d / 60)); RFM 30 (10 days) + 20 (6 orders) + 25 (1100) + 20 (400 days) = 95
     {"purchase": 28.6112, "recency_30": 30, "frequency_5": 20, "monetary_1000": 25, "duration_365": 20},
     ["vip"]),
    ("ecommerce_first_order", ECOMMERCE_RULES,
     {"email": "new@example.org"},
     [act("purchase", 0, total_price="40.00")] + [act("add_to_cart") for _ in range(3)],
     25.0, "C",   # 15 + cart 5 + 5 (cap 10); RFM 30 + 5 + 5 + 5 = 45 -> C
     {"purchase": 15, "add_to_cart": 10, "recency_30": 30, "frequency_1": 5, "monetary_any": 5, "duration_new": 5},
     []),
    ("ecommerce_lapsed", ECOMMERCE_RULES,
     {"email": "old@example.org"},
     [act("purchase", d, amount=100) for d in (400, 300, 250)],
     1.45, "C",   # 15 * (0.5^(400/60) + 0.5^5 + 0.5^(250/60)); RFM 5 + 10 + 10 + 20 = 45 -> C
     {"purchase": 1.4516, "recency_365": 5, "frequency_2": 10, "monetary_100": 10, "duration_365": 20},
     ["at_risk"]),
    ("ecommerce_browser_only", ECOMMERCE_RULES,
     {"email": "look@example.org"},
     [act("page_view") for _ in range(4)],
     3.0, "F",    # page views capped at 3; no purchase: every RFM dimension 0 -> F
     {"page_view": 3},
     []),
]


@pytest.mark.parametrize("case_id, rules, contact, activities, score, grade, fired, entered", CASES,
                         ids=[c[0] for c in CASES])
def test_score_grade_and_fired_rules(case_id, rules, contact, activities, score, grade, fired, entered):
    result = rules.evaluate(contact, activities, set(), NOW)

    assert result.score == score
    assert result.grade == grade
    got = {f.rule: round(f.points, 4) for f in result.score_result.fired()}
    got.update({f.rule: f.points for f in result.grade_result.fired})
    assert got == pytest.approx(fired)
    assert sorted(result.segments.entered) == sorted(entered)
    assert result.mql == ("mql" in entered)


def test_reasons_are_the_top_three_contributions_by_size():
    result = B2B_RULES.evaluate({"email": "sam@rival.com", "title": "Student"},
                                [act("form_submit", form="careers"), act("unsubscribe", 10)], set(), NOW)

    assert [r["rule"] for r in result.reasons] == ["competitor", "careers_form", "job_seeker_title"]
    assert format_reasons(result.reasons) == "Competitor domain -100; Job application form -40; Job seeker -30"


def test_activities_before_a_recycle_are_not_scored():
    contact = {"email": "ana@acme.io", "title": "VP Marketing", "company_size": 500}
    activities = [act("demo_request", 2), act("email_click", 0)]

    result = B2B_RULES.evaluate(contact, activities, set(), NOW, since=NOW - timedelta(days=1))

    assert result.score == 3.0
    assert [f.rule for f in result.score_result.fired()] == ["email_click"]
