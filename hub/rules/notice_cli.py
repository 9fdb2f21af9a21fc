"""`hub notice ...`: set, show and test a workspace's notice channel (to sales).

Registered on the main CLI by hub/cli.py (`main.add_command(notice)`). Settings are given as
repeated `--setting name=value`; a list setting (email `to`) takes several values, repeated or
comma-separated. Bad input is refused with the setting's name (never its value) and nothing is stored.
"""
from __future__ import annotations

import json

import click
from flask.cli import with_appcontext
from marshmallow import ValidationError, fields

from hub.connectors.notice import Notice, NoticeKind, notice_kinds
from hub.exceptions import HubError
from hub.rules import notices


def _runtime():
    from hub.runtime import current_runtime

    return current_runtime()


def _emit(values: dict, as_json: bool) -> None:
    from hub.cli import emit      # imported late: hub.cli registers this group at its end

    emit(values, as_json)


def parse_settings(kind: type[NoticeKind], pairs: tuple[str, ...]) -> dict:
    """`name=value` pairs as the kind's schema expects them: list settings collect their values."""
    schema_fields = kind.settings_schema().fields
    settings: dict = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise click.UsageError(f"--setting wants name=value, got '{name or pair[:20]}'")
        if isinstance(schema_fields.get(name), fields.List):
            settings.setdefault(name, []).extend(v.strip() for v in value.split(",") if v.strip())
        else:
            settings[name] = value
    return settings


def _printable(view: dict) -> dict:
    """`kind: ...` then one line per setting (lists comma-joined)."""
    lines = {"kind": view["kind"] or "log (no channel configured)"}
    for name, value in view["settings"].items():
        lines[name] = ", ".join(map(str, value)) if isinstance(value, list) else ("" if value is None else value)
    return lines


@click.group("notice")
def notice():
    """The workspace's notice channel to sales (Slack or email)."""


@notice.command("set")
@click.option("--workspace", "workspace_id", required=True)
@click.option("--kind", required=True, help=f"one of {', '.join(sorted(notice_kinds()))}")
@click.option("--setting", "pairs", multiple=True, metavar="NAME=VALUE",
              help="a channel setting, e.g. webhook_url=https://hooks.slack.com/... (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@with_appcontext
def notice_set(workspace_id, kind, pairs, as_json):
    """Validate and store (encrypted) the channel notices go to; prints it with secrets masked."""
    kinds = notice_kinds()
    if kind not in kinds:
        raise click.ClickException(f"unknown notice kind '{kind}'; one of {', '.join(sorted(kinds))}")
    settings = parse_settings(kinds[kind], pairs)
    try:
        masked = notices.configure_notice(_runtime(), workspace_id, kind, settings)
    except ValidationError as exc:
        raise click.ClickException(f"invalid {kind} settings: {json.dumps(exc.messages, sort_keys=True)}") from None
    except HubError as exc:
        raise click.ClickException(str(exc)) from None
    view = {"kind": kind, "settings": masked}
    _emit(view if as_json else _printable(view), as_json)


@notice.command("show")
@click.option("--workspace", "workspace_id", required=True)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@with_appcontext
def notice_show(workspace_id, as_json):
    """Print the channel and its settings (secrets masked)."""
    try:
        view = notices.show_notice(_runtime(), workspace_id)
    except HubError as exc:
        raise click.ClickException(str(exc)) from None
    _emit(view if as_json else _printable(view), as_json)


@notice.command("test")
@click.option("--workspace", "workspace_id", required=True)
@with_appcontext
def notice_test(workspace_id):
    """Send a test notice now; prints the channel it went through ("log" when none is configured)."""
    runtime = _runtime()
    try:
        notices.show_notice(runtime, workspace_id)           # refuses an unknown workspace
        channel = notices.send_notice(runtime, workspace_id, Notice(
            subject="lead hub test notice", text="This channel receives lead hub notices (MQL handoffs, SLA)."))
    except HubError as exc:
        raise click.ClickException(f"test notice not sent ({type(exc).__name__}: {exc})") from None
    click.echo(f"channel: {channel}")
