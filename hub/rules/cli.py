"""`hub rules ...`: test a contact, dry-run or save a rule document, manage reps, recycle a lead, check CRM fields.

Registered on the main CLI by hub/cli.py (`main.add_command(rules)`).
"""
from __future__ import annotations

import json
from datetime import datetime

import click
from flask.cli import with_appcontext
from marshmallow import ValidationError
from sqlalchemy import select

from hub.db import transaction
from hub.exceptions import HubError
from hub.models import Contact, Rep, Workspace, utcnow
from hub.rules import store
from hub.rules.dryrun import dry_run
from hub.rules.evaluation import explain
from hub.rules.handoff import recycle
from hub.rules.presets import PRESETS
from hub.rules.ruleset import CompiledRules


def _runtime():
    from hub.runtime import current_runtime

    return current_runtime()


def _workspace_of(session, contact_id: str, workspace_id: str | None) -> str:
    contact = session.get(Contact, contact_id)
    if contact is None or (workspace_id and contact.workspace_id != workspace_id):
        raise click.ClickException(f"no contact {contact_id}")
    return contact.workspace_id


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


@click.group("rules")
def rules():
    """Lead rules: scoring, grading, segments, MQL, routing, SLA."""


@rules.command("test")
@click.option("--contact", "contact_id", required=True)
@click.option("--workspace", "workspace_id", default=None)
@click.option("--at", "at", default=None, help="evaluate as of this ISO time (default now)")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def rules_test(contact_id, workspace_id, at, as_json):
    """Print a contact's score, grade and which rule gave which points (nothing is written)."""
    with transaction(_runtime().engine) as session:
        workspace_id = _workspace_of(session, contact_id, workspace_id)
        version, compiled = store.compiled_rules(session, workspace_id)
        result = explain(session, workspace_id, contact_id, _when(at) or utcnow(), compiled)
    report = {
        "contact_id": contact_id, "rules_version": version, "model": compiled.rules.model,
        "score": result.score, "grade": result.grade, "fit_points": result.grade_result.points, "mql": result.mql,
        "score_rules": [{"rule": f.rule, "label": f.label, "points": round(f.points, 2), "count": f.count}
                        for f in result.fired()],
        "grade_rules": [{"rule": f.rule, "label": f.label, "points": f.points} for f in result.grade_result.fired],
        "segments": sorted(result.segments.members), "reasons": result.reasons,
    }
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"contact: {contact_id}\nrules: {compiled.rules.model} v{version}")
    click.echo(f"score: {result.score:g}\ngrade: {result.grade} ({result.grade_result.points:g} fit points)")
    click.echo(f"mql: {'yes' if result.mql else 'no'}\nsegments: {', '.join(report['segments']) or '-'}")
    click.echo("score rules:")
    for row in report["score_rules"]:
        click.echo(f"  {row['points']:+8.2f}  {row['rule']} ({row['label']}, {row['count']}x)")
    click.echo("grade rules:")
    for row in report["grade_rules"]:
        click.echo(f"  {row['points']:+8.2f}  {row['rule']} ({row['label']})")


def _load_document(path: str) -> tuple[dict, CompiledRules]:
    with open(path, encoding="utf-8") as handle:
        document = json.load(handle)
    try:
        return document, CompiledRules(store.parse_document(document))
    except ValidationError as exc:
        raise click.ClickException(f"invalid rules: {json.dumps(exc.messages)}") from None


def _print_dry_run(report, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    for name, value in report.as_dict().items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
        click.echo(f"{name}: {value}")


@rules.command("dry-run")
@click.option("--workspace", "workspace_id", required=True)
@click.option("--file", "path", default=None, help="proposed rule document (JSON); default: the live rules")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def rules_dry_run(workspace_id, path, as_json):
    """How many contacts would change segment, MQL state, score or grade under these rules."""
    with transaction(_runtime().engine) as session:
        compiled = _load_document(path)[1] if path else store.compiled_rules(session, workspace_id)[1]
        _print_dry_run(dry_run(session, workspace_id, compiled), as_json)


@rules.command("save")
@click.option("--workspace", "workspace_id", required=True)
@click.option("--file", "path", required=True)
@click.option("--yes", is_flag=True, help="save after showing the dry run")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def rules_save(workspace_id, path, yes, as_json):
    """Validate a rule document, show its dry run, and save it as the new live version (with --yes)."""
    document, compiled = _load_document(path)
    with transaction(_runtime().engine) as session:
        _print_dry_run(dry_run(session, workspace_id, compiled), as_json)
        if not yes:
            click.echo("not saved (add --yes to save)", err=True)
            return
        version = store.save_rules(session, workspace_id, document)
    click.echo(json.dumps({"version": version}) if as_json else f"version: {version}")


@rules.command("use")
@click.option("--workspace", "workspace_id", required=True)
@click.option("--model", type=click.Choice(sorted(PRESETS)), required=True)
@with_appcontext
def rules_use(workspace_id, model):
    """Start the workspace on a default model (b2b: BANT grade; ecommerce: RFM grade), as a new version."""
    with transaction(_runtime().engine) as session:
        workspace = session.get(Workspace, workspace_id)
        if workspace is None:
            raise click.ClickException(f"no workspace {workspace_id}")
        workspace.settings = {**(workspace.settings or {}), "rules_model": model}
        version = store.save_rules(session, workspace_id, store.to_document(PRESETS[model]))
    click.echo(f"model: {model}\nversion: {version}")


@rules.command("show")
@click.option("--workspace", "workspace_id", required=True)
@with_appcontext
def rules_show(workspace_id):
    """Print the live rule document (JSON)."""
    with transaction(_runtime().engine) as session:
        version, live = store.load_rules(session, workspace_id)
    click.echo(json.dumps({"version": version, "document": store.to_document(live)}, indent=1))


@rules.command("rep")
@click.option("--workspace", "workspace_id", required=True)
@click.option("--email", required=True)
@click.option("--weight", type=float, default=None)
@click.option("--daily-cap", type=int, default=None)
@click.option("--out-until", default=None, help="out of office until this ISO time ('' clears it)")
@click.option("--hubspot-owner-id", default=None)
@click.option("--salesforce-user-id", default=None)
@click.option("--inactive", is_flag=True)
@with_appcontext
def rules_rep(workspace_id, email, weight, daily_cap, out_until, hubspot_owner_id, salesforce_user_id, inactive):
    """Add or update a sales rep (routing weight, daily cap, out of office, CRM user ids)."""
    with transaction(_runtime().engine) as session:
        rep = session.scalar(select(Rep).where(Rep.workspace_id == workspace_id, Rep.email == email.lower()))
        if rep is None:
            rep = Rep(workspace_id=workspace_id, email=email.lower(), weight=1.0, active=True, rr_credit=0.0)
            session.add(rep)
        updates = {"weight": weight, "daily_cap": daily_cap, "hubspot_owner_id": hubspot_owner_id,
                   "salesforce_user_id": salesforce_user_id}
        for name, value in updates.items():
            if value is not None:
                setattr(rep, name, value)
        if out_until is not None:
            rep.out_of_office_until = _when(out_until) if out_until else None
        rep.active = not inactive
        session.flush()
        click.echo(f"rep: {rep.email}\nweight: {rep.weight:g}\ndaily_cap: {rep.daily_cap or '-'}\n"
                   f"out_of_office_until: {rep.out_of_office_until or '-'}\nactive: {rep.active}")


@rules.command("recycle")
@click.option("--contact", "contact_id", required=True)
@click.option("--reason", required=True)
@with_appcontext
def rules_recycle(contact_id, reason):
    """Sales rejected the lead: back to nurture with a reason."""
    from hub.rules.schedule import schedule_evaluation

    with transaction(_runtime().engine) as session:
        workspace_id = _workspace_of(session, contact_id, None)
        recycle(session, workspace_id, contact_id, reason)
        schedule_evaluation(session, workspace_id, contact_id)
    click.echo(f"recycled: {contact_id}")


@rules.command("preflight")
@click.option("--workspace", "workspace_id", required=True)
@with_appcontext
def rules_preflight(workspace_id):
    """Check (and where permitted create) the score fields in each connected CRM; say exactly what is missing."""
    from hub.sync.engine import connectors_for

    missing_any = False
    for kind, connector in sorted(connectors_for(_runtime(), workspace_id).items()):
        try:
            missing = connector.ensure_hub_fields()
        except HubError as exc:
            raise click.ClickException(f"{kind}: {exc}") from None
        missing_any |= bool(missing)
        report_hub_fields(kind, missing)
    if missing_any:
        raise click.ClickException("score fields missing: add them (Setup > Object Manager > Fields & Relationships)")


def report_hub_fields(kind: str, missing: list[str], err: bool = False) -> None:
    """`kind: ok`, or `kind: missing ...` and one `  add <field spec> on <Object>` line per missing field."""
    click.echo(f"{kind}: {'ok' if not missing else 'missing ' + ', '.join(missing)}", err=err)
    for name in missing:
        click.echo(f"  add {FIELD_SPECS.get(name.rsplit('.', 1)[-1], name)} on {name.rsplit('.', 1)[0]}", err=err)


FIELD_SPECS = {
    "Hub_Score__c": "Hub_Score__c: Number(5, 1), label 'Hub score'",
    "Hub_Grade__c": "Hub_Grade__c: Text(2), label 'Hub grade'",
    "Hub_Score_Reasons__c": "Hub_Score_Reasons__c: Text(255), label 'Hub score reasons'",
}
