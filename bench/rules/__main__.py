"""bench/rules: score evaluations per second per core (20 rules, 100,000 contacts) and a full decay pass.

    python bench/rules [--contacts 100000] [--database-url URL]

Evaluations run in this one process (one core). The decay pass runs against a fresh SQLite file
by default, or the PostgreSQL URL given (a scratch database: its tables are created and filled).
Target: >= 20,000 evaluations/s/core.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import random
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from hub.rules.context import ActivityFact  # noqa: E402
from hub.rules.presets import B2B  # noqa: E402
from hub.rules.ruleset import CompiledRules  # noqa: E402
from hub.rules.scoring import ActivityRule, ProfileRule  # noqa: E402

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
KINDS = ("page_view", "page_view", "page_view", "email_open", "email_click", "form_submit", "webinar",
         "content_download", "demo_request", "unsubscribe")
TITLES = ("VP Sales", "CTO", "Marketing Manager", "Director of IT", "Engineer", "Student", None)
INDUSTRIES = ("Software", "Retail", "Fintech", None)

# 10 activity + 3 profile rules from the B2B preset, plus 7 more: 20 scoring rules.
EXTRA_RULES = (
    ActivityRule("webinar", "webinar", 15, daily_cap=15, label="Webinar"),
    ActivityRule("content_download", "content_download", 8, daily_cap=16, label="Content download"),
    ActivityRule("docs_page", "page_view", 2, when='contains(url, "/docs")', daily_cap=6, label="Docs"),
    ActivityRule("case_study", "page_view", 3, when='startswith(url, "/customers")', daily_cap=6),
    ActivityRule("trial_form", "form_submit", 20, when='form == "trial"', total_cap=20),
)
EXTRA_PROFILE = (
    ProfileRule("big_company", 5, "company_size >= 1000"),
    ProfileRule("dach", 3, "country in ('DE', 'AT', 'CH')"),
)


def bench_rules() -> CompiledRules:
    rules = dataclasses.replace(B2B, activity_rules=B2B.activity_rules + EXTRA_RULES,
                                profile_rules=B2B.profile_rules + EXTRA_PROFILE,
                                lists={**B2B.lists, "competitor_domains": ("rival.com", "other.io")})
    assert len(rules.activity_rules) + len(rules.profile_rules) == 20
    return CompiledRules(rules)


def make_contacts(count: int, seed: int = 7) -> list[tuple[dict, list[ActivityFact]]]:
    rng = random.Random(seed)
    contacts = []
    urls = ("/pricing", "/docs/api", "/blog/x", "/customers/acme", "/")
    for n in range(count):
        contact = {"email": f"p{n}@{rng.choice(('acme.io', 'gmail.com', 'rival.com', 'corp.de'))}",
                   "title": rng.choice(TITLES), "company_size": rng.choice((5, 40, 120, 500, 3000, None)),
                   "industry": rng.choice(INDUSTRIES), "country": rng.choice(("DE", "US", "FR")),
                   "custom": {"timeline": rng.choice(("now", "this year", None))}}
        activities = []
        for _ in range(rng.randint(2, 10)):
            kind = rng.choice(KINDS)
            activities.append(ActivityFact(kind, NOW - timedelta(days=rng.uniform(0, 120)),
                                           {"url": rng.choice(urls), "form": rng.choice(("demo-request", "trial", "newsletter"))}))
        contacts.append((contact, activities))
    return contacts


def run_evaluations(rules: CompiledRules, contacts) -> dict[str, tuple[float, float]]:
    """(CPU seconds, wall seconds) for score-only and full evaluations; per-core rates use CPU time,
    so a busy machine does not distort them."""
    timings = {}
    for name, evaluate in (("score", lambda c, a: rules.scorer.score(rules.profile(c, a, NOW), a, NOW)),
                           ("full", lambda c, a: rules.evaluate(c, a, set(), NOW))):
        cpu, wall = time.process_time(), time.perf_counter()
        for contact, activities in contacts:
            evaluate(contact, activities)
        timings[name] = (time.process_time() - cpu, time.perf_counter() - wall)
    return timings


def run_decay(database_url: str | None, count: int) -> tuple[float, int]:
    from sqlalchemy import insert

    from hub.db import get_engine
    from hub.migrate import upgrade
    from hub.models import Contact, LeadScore, Workspace
    from hub.rules.decay import decay_workspace

    if database_url is None:
        database_url = f"sqlite:///{tempfile.mkdtemp(prefix='bench-rules-')}/bench.db"
    upgrade(database_url)
    engine = get_engine(database_url)
    workspace_id = f"bench{int(time.time())}"
    then = NOW - timedelta(days=7)
    with engine.begin() as conn:
        conn.execute(insert(Workspace), [{"id": workspace_id, "name": "bench", "api_key_hash": workspace_id,
                                          "settings": {}, "created_at": then}])
        for start in range(0, count, 10000):
            ids = [f"{workspace_id}{n:010d}"[-32:] for n in range(start, min(count, start + 10000))]
            conn.execute(insert(Contact), [{"id": i, "workspace_id": workspace_id, "email": f"{i}@x.io", "score": 50.0,
                                            "consent": {}, "score_reasons": [], "mql": False, "custom": {},
                                            "field_updated_at": {}, "created_at": then, "updated_at": then}
                                           for i in ids])
            conn.execute(insert(LeadScore), [{"contact_id": i, "workspace_id": workspace_id, "decaying": 45.0,
                                              "static": 5.0, "fit_points": 60.0, "decayed_at": then,
                                              "contributions": {"demo_form": {"label": "Demo", "points": 45.0,
                                                                              "decays": True}}}
                                             for i in ids])
    report = decay_workspace(engine, workspace_id, 30, NOW, watch=(50.0, 35.0))
    return report.seconds, report.updated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--database-url", default=None, help="scratch database for the decay pass (default SQLite)")
    parser.add_argument("--skip-decay", action="store_true")
    args = parser.parse_args()

    rules = bench_rules()
    contacts = make_contacts(args.contacts)
    activities = sum(len(a) for _, a in contacts)
    timings = run_evaluations(rules, contacts)
    print(f"rules: 20 scoring rules ({len(rules.rules.grade_rules)} grade rules, "
          f"{len(rules.rules.all_segments())} segments); contacts: {args.contacts:,}; activities: {activities:,}")
    for name, label in (("score", "score evaluations"), ("full", "full evaluations (score + grade + segments)")):
        cpu, wall = timings[name]
        print(f"{label}/s/core: {args.contacts / cpu:,.0f} (cpu {cpu:.2f} s, wall {wall:.2f} s)")
    rate = args.contacts / timings["score"][0]
    print(f"target: >= 20,000 score evaluations/s/core -> {'met' if rate >= 20_000 else 'NOT met'}")
    if not args.skip_decay:
        seconds, updated = run_decay(args.database_url, args.contacts)
        backend = (args.database_url or "sqlite").split(":")[0]
        print(f"decay pass ({backend}): {updated:,} lead scores in {seconds:.2f} s "
              f"({updated / seconds:,.0f}/s)")


if __name__ == "__main__":
    main()
