"""`hub rules test`, `hub rules dry-run`, `hub rules save`: what an admin sees before and after a rule change."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner

from hub.cli import main as hub_cli
from hub.db import transaction
from hub.models import Activity, Contact, utcnow
from hub.rules import store
from hub.rules.evaluation import evaluate_contact
from hub.rules.presets import B2B


@pytest.fixture
def ws(workspace) -> str:
    return workspace["workspace_id"]


def vp_with_demo(runtime, ws, email: str, page_views: int = 0) -> str:
    now = utcnow()
    with transaction(runtime.engine) as session:
        contact = Contact(workspace_id=ws, email=email, title="VP Sales", company_size=500)
        session.add(contact)
        session.flush()
        kinds = ["demo_request"] + ["page_view"] * page_views
        for n, kind in enumerate(kinds):
            session.add(Activity(workspace_id=ws, contact_id=contact.id, kind=kind, properties={"url": "/pricing"},
                                 occurred_at=now - timedelta(seconds=n + 1), idempotency_key=f"{email}:{n}"))
        return contact.id


def run(*args) -> str:
    result = CliRunner().invoke(hub_cli, ["rules", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_rules_test_prints_score_grade_and_the_points_of_each_rule(runtime, ws):
    contact_id = vp_with_demo(runtime, ws, "ana@acme.io", page_views=4)

    output = run("test", "--contact", contact_id)

    # demo 55 + page views 3 (cap 3/day) + pricing 10 (cap 10/day) = 68; fit 30 + 35 = 65 -> B
    lines = output.splitlines()
    assert lines[:6] == [f"contact: {contact_id}", "rules: b2b v0", "score: 68", "grade: B (65 fit points)",
                         "mql: yes", "segments: mql"]
    assert lines[6:] == ["score rules:",
                         "    +55.00  demo_request (Demo requested, 1x)",
                         "    +10.00  pricing_page (Pricing page visits, 2x)",
                         "     +3.00  page_view (Page views, 3x)",
                         "grade rules:",
                         "    +30.00  size_200 (200-999 employees)",
                         "    +35.00  title_exec (Executive title)"]
    as_json = json.loads(run("test", "--contact", contact_id, "--json"))
    assert (as_json["score"], as_json["grade"], as_json["reasons"][0]["rule"]) == (68.0, "B", "demo_request")


def test_unknown_contact_is_a_clear_error(runtime, ws):
    result = CliRunner().invoke(hub_cli, ["rules", "test", "--contact", "nope"])
    assert result.exit_code == 1 and "no contact nope" in result.output


def _document_file(tmp_path, **mql) -> str:
    document = store.to_document(B2B)
    document["mql"].update(mql)
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(document))
    return str(path)


def test_dry_run_counts_who_would_change_before_a_rule_is_saved(runtime, ws, tmp_path):
    ids = [vp_with_demo(runtime, ws, f"vp{n}@acme.io") for n in range(3)]
    with transaction(runtime.engine) as session:
        session.add(Contact(workspace_id=ws, email="cold@acme.io"))
        for contact_id in ids:
            evaluate_contact(session, ws, contact_id)

    unchanged = json.loads(run("dry-run", "--workspace", ws, "--json"))
    stricter = json.loads(run("dry-run", "--workspace", ws, "--file", _document_file(tmp_path, enter_score=90,
                                                                                        exit_score=80), "--json"))

    # the cold contact was never evaluated: its score stays 0, its blank grade would become F
    assert unchanged == {"contacts": 4, "mql_gained": 0, "mql_lost": 0, "score_changed": 0, "grade_changed": 1,
                         "entering": {}, "leaving": {}}
    assert (stricter["mql_lost"], stricter["leaving"]) == (3, {"mql": 3})


def test_save_shows_the_dry_run_and_saves_only_with_yes(runtime, ws, tmp_path):
    vp_with_demo(runtime, ws, "vp@acme.io")
    path = _document_file(tmp_path, enter_score=40, exit_score=30)

    first = run("save", "--workspace", ws, "--file", path)
    second = run("save", "--workspace", ws, "--file", path, "--yes")

    assert "mql_gained: 1" in first and "version" not in first
    assert second.strip().endswith("version: 1")
    with transaction(runtime.engine) as session:
        version, rules = store.load_rules(session, ws)
    assert (version, rules.mql.enter_score) == (1, 40)


def test_save_refuses_an_invalid_document_with_the_path_to_the_problem(runtime, ws, tmp_path):
    document = store.to_document(B2B)
    document["segments"][0]["when"] = "open('/etc/passwd')"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))

    result = CliRunner().invoke(hub_cli, ["rules", "save", "--workspace", ws, "--file", str(path), "--yes"])

    assert result.exit_code == 1
    assert '"segments": {"0": {"when": ["function \'open\' is not allowed' in result.output


def test_a_workspace_chooses_the_ecommerce_model(runtime, ws):
    with transaction(runtime.engine) as session:
        contact = Contact(workspace_id=ws, email="shopper@example.org")
        session.add(contact)
        session.flush()
        for n, days in enumerate((10, 40)):
            session.add(Activity(workspace_id=ws, contact_id=contact.id, kind="purchase", properties={"amount": 300},
                                 occurred_at=utcnow() - timedelta(days=days), idempotency_key=f"o{n}"))
        contact_id = contact.id

    assert run("use", "--workspace", ws, "--model", "ecommerce").splitlines() == ["model: ecommerce", "version: 1"]
    result = json.loads(run("test", "--contact", contact_id, "--json"))

    # RFM: recency 10 days 30 + 2 orders 10 + spent 600 20 + customer for 40 days 5 = 65 -> B
    assert (result["model"], result["grade"], result["fit_points"]) == ("ecommerce", "B", 65)
    assert [r["rule"] for r in result["grade_rules"]] == ["recency_30", "frequency_2", "monetary_500", "duration_new"]
