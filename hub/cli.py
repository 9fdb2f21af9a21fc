"""The `hub` command line (click, via Flask's CLI group)."""
from __future__ import annotations

import json
import logging
import os
import sys
import time

import click
from flask.cli import FlaskGroup, with_appcontext

from hub import admin
from hub.app import create_app
from hub.cli_output import emit, json_option
from hub.runtime import current_runtime


def _app_factory():
    return create_app()


@click.group(cls=FlaskGroup, create_app=_app_factory, add_default_commands=False,
             add_version_option=False, load_dotenv=False)
def main():
    """lead hub: webhooks in, one canonical contact, HubSpot <-> Salesforce sync, lead rules."""


def _fail(exc: Exception):
    raise click.ClickException(str(exc))


# --- database ---------------------------------------------------------------------------------

@main.group()
def db():
    """Database schema."""


@db.command("upgrade")
@with_appcontext
def db_upgrade():
    """Run Alembic migrations to the latest revision."""
    from hub.migrate import upgrade

    upgrade(current_runtime().settings.database_url)
    click.echo("database: up to date")


# --- workspaces, sources, connections -----------------------------------------------------------

@main.group()
def workspace():
    """Workspaces (tenants)."""


@workspace.command("create")
@click.argument("name")
@json_option
@with_appcontext
def workspace_create(name, as_json):
    emit(admin.create_workspace(current_runtime(), name), as_json)


@main.group()
def source():
    """Form and store sources that post signed webhooks."""


@source.command("add")
@click.option("--workspace", "workspace_id", required=True)
@click.option("--kind", type=click.Choice(admin.SOURCE_KINDS), required=True)
@click.option("--secret", default=None, help="the vendor's signing secret (unused for html)")
@click.option("--thank-you-url", default=None, help="html: where to redirect after a submission")
@json_option
@with_appcontext
def source_add(workspace_id, kind, secret, thank_you_url, as_json):
    settings = {"thank_you_url": thank_you_url} if thank_you_url else {}
    try:
        emit(admin.add_source(current_runtime(), workspace_id, kind, secret, settings), as_json)
    except admin.AdminError as exc:
        _fail(exc)


@main.group()
def connect():
    """Connect a CRM (credentials are stored encrypted)."""


@connect.command("hubspot")
@click.option("--workspace", "workspace_id", required=True)
@click.option("--access-token", required=True)
@click.option("--expires-in", type=int, default=None)
@click.option("--refresh-token", default=None)
@click.option("--client-id", default=None)
@click.option("--client-secret", default=None)
@click.option("--app-id", default=None)
@click.option("--app-secret", default=None, help="signs webhooks (defaults to --client-secret)")
@click.option("--portal-id", default=None)
@json_option
@with_appcontext
def connect_hubspot(workspace_id, access_token, expires_in, refresh_token, client_id, client_secret,
                    app_id, app_secret, portal_id, as_json):
    expires_at = time.time() + expires_in if expires_in else None
    credentials = {"access_token": access_token, "refresh_token": refresh_token, "expires_at": expires_at,
                   "client_id": client_id, "client_secret": client_secret,
                   "app_secret": app_secret or client_secret}
    try:
        emit(admin.connect(current_runtime(), workspace_id, "hubspot", portal_id, credentials,
                           {"app_id": app_id} if app_id else {}), as_json)
    except admin.AdminError as exc:
        _fail(exc)
    _check_hub_fields(workspace_id, "hubspot", as_json)


@connect.command("salesforce")
@click.option("--workspace", "workspace_id", required=True)
@click.option("--instance-url", required=True)
@click.option("--access-token", required=True)
@click.option("--refresh-token", default=None)
@click.option("--client-id", default=None)
@click.option("--client-secret", default=None)
@click.option("--org-id", default=None)
@click.option("--login-url", default=None)
@click.option("--integration-user-id", default=None)
@click.option("--poll-interval", type=int, default=None,
              help="also pull changes every SECONDS (orgs without Outbound Messages); 0 turns polling off")
@json_option
@with_appcontext
def connect_salesforce(workspace_id, instance_url, access_token, refresh_token, client_id, client_secret,
                       org_id, login_url, integration_user_id, poll_interval, as_json):
    from hub.sync import polling

    credentials = {"access_token": access_token, "refresh_token": refresh_token,
                   "client_id": client_id, "client_secret": client_secret}
    settings = {k: v for k, v in {"instance_url": instance_url.rstrip("/"),
                                  "login_url": (login_url or "").rstrip("/") or None,
                                  "integration_user_id": integration_user_id}.items() if v}
    try:
        if poll_interval is not None:
            settings["poll_interval"] = polling.validate_interval(poll_interval) or None
        answer = admin.connect(current_runtime(), workspace_id, "salesforce", org_id, credentials, settings)
        if poll_interval:
            answer["poll_interval"] = poll_interval
            polling.arm_now(current_runtime(), workspace_id)
        emit(answer, as_json)
    except (ValueError, admin.AdminError) as exc:
        _fail(exc)
    _check_hub_fields(workspace_id, "salesforce", as_json)


@main.command("install-link")
@click.argument("crm", type=click.Choice(("hubspot", "salesforce")))
@click.option("--workspace", "workspace_id", required=True)
@click.option("--login-url", default=None,
              help="salesforce: the org's login host (default SALESFORCE_LOGIN_URL; "
                   "https://test.salesforce.com for a sandbox)")
@json_option
@with_appcontext
def install_link_command(crm, workspace_id, login_url, as_json):
    """Print a link (valid 1 hour) that connects CRM to the workspace through the browser OAuth flow."""
    from hub.exceptions import OAuthError
    from hub.oauth import install_link

    if login_url and (crm != "salesforce" or not login_url.startswith(("https://", "http://"))):
        raise click.UsageError("--login-url is an http(s) URL, for salesforce only")
    try:
        emit(install_link(current_runtime(), crm, workspace_id, login_url), as_json)
    except OAuthError as exc:
        _fail(Exception(f"{exc.reason}: {exc.detail}"))
    except admin.AdminError as exc:
        _fail(exc)


def _check_hub_fields(workspace_id: str, kind: str, as_json: bool) -> None:
    """Best effort after `hub connect` (the connection is stored already): the score fields, as preflight does.

    The report goes to stdout (stderr with --json, which keeps stdout one JSON object); a CRM that
    cannot be reached only earns a warning line.
    """
    from hub.exceptions import HubError
    from hub.rules.cli import report_hub_fields

    try:
        missing = admin.ensure_hub_fields(current_runtime(), workspace_id, kind)
    except HubError as exc:
        click.echo(f"warning: {kind} score fields not checked ({type(exc).__name__}: {exc}); "
                   f"run `hub rules preflight --workspace {workspace_id}`", err=True)
        return
    report_hub_fields(kind, missing, err=as_json)
    if missing:
        click.echo(f"  add them in Salesforce (Setup > Object Manager > Fields & Relationships), then run "
                   f"`hub rules preflight --workspace {workspace_id}`", err=as_json)


# --- processes ---------------------------------------------------------------------------------

@main.command("relay")
@with_appcontext
def relay_command():
    """Drain the outbox into RQ (waits while Redis is down)."""
    from hub import logs
    from hub.sync import relay

    logs.configure()
    relay.run_forever(current_runtime())


@main.command("worker")
@click.option("--burst", is_flag=True, help="exit when the queue is empty")
@with_appcontext
def worker_command(burst):
    """Run an RQ worker on the hub queue."""
    from hub import logs
    from hub.sync.worker import make_worker

    from hub.db import dispose_all
    from hub.sync.polling import arm_all

    logs.configure()
    arm_all(current_runtime())          # Salesforce polling of the orgs that opted in (never armed twice)
    dispose_all()                       # no pooled connection may be inherited by the forked work horses
    make_worker(current_runtime()).work(burst=burst, with_scheduler=True)


@main.command("replay")
@click.option("--event", "event_id", type=int, default=None)
@click.option("--failed", is_flag=True)
@with_appcontext
def replay_command(event_id, failed):
    """Re-run one event, or every failed event."""
    from hub.sync import replay

    runtime = current_runtime()
    if failed:
        click.echo(f"requeued: {replay.replay_failed(runtime)}")
    elif event_id is not None:
        if not replay.replay_event(runtime, event_id):
            _fail(Exception(f"no replayable event {event_id}"))
        click.echo(f"requeued: {event_id}")
    else:
        raise click.UsageError("give --event ID or --failed")


@main.command("erase")
@click.option("--workspace", "workspace_id", required=True)
@click.option("--email", default=None, help="the person's email address")
@click.option("--contact", "contact_id", default=None, help="or the hub's contact id")
@json_option
@with_appcontext
def erase_command(workspace_id, email, contact_id, as_json):
    """Erase a person's data (GDPR/CCPA erasure request); only one-way hashes are kept."""
    from hub import privacy
    from hub.exceptions import InvalidValueError

    if (email is None) == (contact_id is None):
        raise click.UsageError("give --email or --contact")
    try:
        erased = privacy.erase_person(current_runtime(), workspace_id, email=email, contact_id=contact_id)
    except InvalidValueError as exc:
        _fail(Exception(f"invalid email: {exc}"))
    except privacy.UnknownContact as exc:
        _fail(exc)
    emit({"erased_contact_id": erased.contact_id or "", "subjects_remembered": erased.subjects_remembered},
         as_json)


@main.command("serve")
@click.option("--port", type=int, default=None, help="defaults to HUB_PORT (8000)")
@click.option("--host", default="0.0.0.0", show_default=True, help="address gunicorn binds")
@click.option("--workers", type=int, default=1, show_default=True, help="RQ workers to start")
@click.option("--web-workers", type=int, default=2, show_default=True, help="gunicorn worker processes")
@with_appcontext
def serve_command(port, host, workers, web_workers):
    """Web + relay + worker in one process tree (the embedded default needs no services)."""
    from hub.migrate import upgrade
    from hub.supervisor import ProcessTree, fresh_metrics_dir

    settings = current_runtime().settings
    port = port or settings.port
    upgrade(settings.database_url)
    tree = ProcessTree(env=dict(
        os.environ, HUB_PORT=str(port), HUB_INSTANCE_DIR=settings.instance_dir,
        HUB_ENCRYPTION_KEYS=",".join(settings.encryption_keys), HUB_DATABASE_URL=settings.database_url,
        PROMETHEUS_MULTIPROC_DIR=fresh_metrics_dir(settings.instance_dir)))
    try:
        tree.env["HUB_REDIS_URL"] = settings.redis_url or tree.start_embedded_redis(settings.instance_dir)
        hub_cmd = [sys.executable, "-m", "hub.cli"]
        tree.start("relay", hub_cmd + ["relay"])
        for number in range(workers):
            tree.start(f"worker-{number + 1}", hub_cmd + ["worker"])
        tree.start("web", [sys.executable, "-m", "gunicorn", "-c", "python:hub.gunicorn_config",
                           "--bind", f"{host}:{port}", "--workers", str(web_workers), "wsgi:app"])
    except BaseException:
        tree.stop()
        raise
    _print_urls(settings, port)
    sys.exit(_supervise(tree))


def _print_urls(settings, port: int) -> None:
    base = settings.public_url or f"http://127.0.0.1:{port}"
    click.echo(f"hub: serving on {base} (database {settings.database_url.split(':')[0]}, "
               f"redis {'external' if settings.redis_url else 'embedded'})")
    click.echo(f"post webhooks to:\n  HubSpot     {base}/webhooks/hubspot\n"
               f"  Salesforce  {base}/webhooks/salesforce/<source_key>\n"
               f"  forms       {base}/webhooks/forms/<source_key>\n"
               f"  shops       {base}/webhooks/shops/<source_key>\n"
               f"health: {base}/healthz  ready: {base}/readyz  metrics: {base}/metrics\n"
               f"REST API: {base}/api/v1 (Bearer <api key>; {base}/api/v1/openapi.json)\n"
               "Ctrl-C stops everything.")


def _supervise(tree) -> int:
    """Run until Ctrl-C/SIGTERM or a child dies; every child is stopped before this returns."""
    return tree.run()


# --- two-way sync: field map, backfill ------------------------------------------------------------

@main.group()
def mapping():
    """The HubSpot <-> Salesforce field map and its per-field directions."""


@mapping.command("show")
@click.option("--workspace", "workspace_id", required=True)
@json_option
@with_appcontext
def mapping_show(workspace_id, as_json):
    from hub.sync.settings import workspace_mapping

    rows = workspace_mapping(current_runtime(), workspace_id)
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        crm = f" ({row['crm']})" if row["crm"] else ""
        forward = " forward only to " + ",".join(row["forward_only"]) if row["forward_only"] else ""
        click.echo(f"{row['field']}: {row['hubspot'] or '-'} <-> {row['salesforce'] or '-'}  "
                   f"{row['direction']}{crm}{forward}")


@mapping.command("set")
@click.option("--workspace", "workspace_id", required=True)
@click.option("--field", "field_name", required=True, help="canonical field, e.g. title")
@click.option("--direction", required=True,
              type=click.Choice(("two_way", "most_recent", "crm_wins_unless_blank", "crm_always", "hub_always", "none")))
@click.option("--crm", type=click.Choice(("hubspot", "salesforce")), default=None,
              help="the CRM a crm_wins_unless_blank / crm_always direction names")
@json_option
@with_appcontext
def mapping_set(workspace_id, field_name, direction, crm, as_json):
    from hub.sync.settings import set_direction

    try:
        emit(set_direction(current_runtime(), workspace_id, field_name, direction, crm), as_json)
    except (ValueError, admin.AdminError) as exc:
        _fail(exc)


@main.group("sync")
def sync_group():
    """Workspace sync options: deletions, which contacts are created in the CRMs."""


@sync_group.command("show")
@click.option("--workspace", "workspace_id", required=True)
@json_option
@with_appcontext
def sync_show(workspace_id, as_json):
    from hub.sync.settings import show_sync

    try:
        emit(_printable(show_sync(current_runtime(), workspace_id), as_json), as_json)
    except admin.AdminError as exc:
        _fail(exc)


@sync_group.command("set")
@click.option("--workspace", "workspace_id", required=True)
@click.option("--deletions", type=click.Choice(("unlink", "propagate")), default=None,
              help="a CRM deletion unlinks the record (default) or deletes the linked record in the other CRM")
@click.option("--create-segment", default=None,
              help="create records in the CRMs only for contacts in this segment ('' = every contact with an email)")
@click.option("--create/--no-create", "create", default=None, help="create records in the CRMs at all")
@json_option
@with_appcontext
def sync_set(workspace_id, deletions, create_segment, create, as_json):
    from hub.sync.settings import set_sync

    changes = {name: value for name, value in (("deletions", deletions), ("create_segment", create_segment),
                                               ("create", create)) if value is not None}
    if not changes:
        raise click.UsageError("give --deletions, --create-segment or --create/--no-create")
    try:
        emit(_printable(set_sync(current_runtime(), workspace_id, **changes), as_json), as_json)
    except (ValueError, admin.AdminError) as exc:
        _fail(exc)


def _printable(options: dict, as_json: bool) -> dict:
    """JSON keeps the types; `name: value` lines print booleans as true/false and nothing as ''."""
    if as_json:
        return options
    return {name: "" if value is None else (str(value).lower() if isinstance(value, bool) else value)
            for name, value in options.items()}


@main.command("backfill")
@click.argument("system", type=click.Choice(("hubspot", "salesforce")))
@click.option("--workspace", "workspace_id", required=True)
@json_option
@with_appcontext
def backfill_command(system, workspace_id, as_json):
    """Read every contact of a CRM (resumable; under the rate limit) and queue them for processing."""
    from hub.connectors import registry
    from hub.exceptions import FatalError, RetriableError
    from hub.sync.backfill import backfill

    runtime = current_runtime()
    try:
        connector = registry.connector_for(runtime, workspace_id, system)
        with click.progressbar(length=0, label=f"backfill {system}", show_pos=True,
                               file=sys.stderr) as bar:
            result = backfill(runtime, workspace_id, system, connector, progress=bar.update)
    except (FatalError, RetriableError) as exc:
        _fail(Exception(f"backfill stopped ({type(exc).__name__}: {exc}); run it again to resume"))
    emit({"read": result.read, "stored": result.stored, "pages": result.pages,
          "resumed": str(result.resumed).lower()}, as_json)


@main.command("demo")
@click.option("--verbose", is_flag=True, help="also show the hub's own log lines")
def demo_command(verbose):
    """The whole loop against sandbox CRMs on loopback ports; needs nothing installed, leaves nothing behind."""
    from hub.demo import run

    if not verbose:
        logging.getLogger("hub").setLevel(logging.WARNING)
    sys.exit(run(click.echo))


# --- lead rules (hub/rules/cli.py) ---------------------------------------------------------------

from hub.rules.cli import rules as rules_group  # noqa: E402 - the group lives with the rules

main.add_command(rules_group)

# --- notice channel and outbound messages (hub/rules/notice_cli.py) ----------------------------------

from hub.rules.notice_cli import notice as notice_group  # noqa: E402 - the group lives with the notices

main.add_command(notice_group)


if __name__ == "__main__":
    main()
