"""Owner routing: weighted round robin shares, caps, out of office; account owner and territory order."""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

from hub.rules.routing import RepSlot, pick_round_robin

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)


def slots(*specs) -> list[RepSlot]:
    return [RepSlot(id=i + 1, email=email, weight=weight, **extra) for i, (email, weight, extra) in enumerate(specs)]


def run(reps: list[RepSlot], picks: int, now: datetime = NOW) -> Counter:
    counts: Counter = Counter()
    for _ in range(picks):
        chosen = pick_round_robin(reps, now)
        counts[chosen.email if chosen else None] += 1
    return counts


def test_1000_assignments_match_the_weights_within_one_percent():
    counts = run(slots(("a@x.io", 5, {}), ("b@x.io", 3, {}), ("c@x.io", 2, {})), 1000)

    for email, share in (("a@x.io", 0.5), ("b@x.io", 0.3), ("c@x.io", 0.2)):
        assert abs(counts[email] / 1000 - share) <= 0.01
    assert sum(counts.values()) == 1000


def test_uneven_weights_stay_within_one_percent():
    counts = run(slots(("a@x.io", 1.5, {}), ("b@x.io", 1, {}), ("c@x.io", 0.5, {}), ("d@x.io", 4, {})), 1000)

    total = 7.0
    for email, weight in (("a@x.io", 1.5), ("b@x.io", 1), ("c@x.io", 0.5), ("d@x.io", 4)):
        assert abs(counts[email] / 1000 - weight / total) <= 0.01


def test_a_daily_cap_is_respected_and_the_rest_follow_their_weights():
    counts = run(slots(("a@x.io", 5, {"daily_cap": 100}), ("b@x.io", 3, {}), ("c@x.io", 2, {})), 1000)

    assert counts["a@x.io"] == 100
    # the other 900 split 3:2
    assert abs(counts["b@x.io"] / 900 - 0.6) <= 0.01
    assert abs(counts["c@x.io"] / 900 - 0.4) <= 0.01


def test_out_of_office_reps_get_nothing_until_they_are_back():
    reps = slots(("a@x.io", 1, {"out_of_office_until": NOW + timedelta(days=2)}), ("b@x.io", 1, {}))

    assert run(reps, 500) == Counter({"b@x.io": 500})
    back = run(reps, 500, now=NOW + timedelta(days=3))
    assert back == Counter({"a@x.io": 250, "b@x.io": 250})   # no backlog owed for the days away


def test_everyone_capped_or_away_means_no_rep():
    reps = slots(("a@x.io", 1, {"daily_cap": 1}), ("b@x.io", 1, {"active": False}))

    assert run(reps, 3) == Counter({"a@x.io": 1, None: 2})
