"""`hub notice ...`: the workspace's notice channel (to sales), its channels to contacts (sms, webhook)
and the frequency caps on messages to contacts.

Registered on the main CLI by hub/cli.py (`main.add_command(notice)`). Settings are given as
repeated `--setting name=value`; a list setting (email `to`) takes several values, repeated or
comma-separated. Bad input is refused with the setting's name (never its value) and nothing is stored.
"""
from __future__ import annotations

import json

import click
from flask.cli import with_appcontext
from marshmallow import ValidationError, fields

from hub.cli_output import emit, json_option, workspace_option
from hub.connectors.notice import Notice, NoticeKind
from hub.exceptions import HubError
from hub.rules import caps, messages, notices
from hub.rules.segments import MESSAGE_CHANNELS


def _runtime():
    from hub.runtime import current_runtime

    return current_runtime()


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


def _text(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else ("" if value is None else str(value))


def _printable(view: dict, prefix: str = "") -> dict:
    """`kind: ...` then one line per setting (lists comma-joined), names prefixed for a contact channel."""
    lines = {f"{prefix}kind": view["kind"] or "log (no channel configured)"}
    lines.update({f"{prefix}{name}": _text(value) for name, value in view["settings"].items()})
    return lines


def _show_lines(notice_view: dict, contact_view: dict) -> dict:
    lines = _printable(notice_view)
    for channel, view in contact_view["channels"].items():
        lines.update(_printable(view, prefix=f"{channel}."))
    for channel, cap in contact_view["caps"].items():
        lines[f"cap.{channel}"] = f"{cap['max']} per {cap['days']} days"
    return lines


def _settings_error(what: str, exc: ValidationError):
    raise click.ClickException(f"invalid {what} settings: {json.dumps(exc.messages, sort_keys=True)}") from None


@click.group("notice")
def notice():
    """Notices to sales (Slack or email), message channels to contacts (sms, webhook), frequency caps."""


@notice.command("set")
@workspace_option
@click.option("--kind", required=True, help=f"one of {', '.join(notices.NOTICE_KINDS)}")
@click.option("--setting", "pairs", multiple=True, metavar="NAME=VALUE",
              help="a channel setting, e.g. webhook_url=https://hooks.slack.com/... (repeatable)")
@json_option
@with_appcontext
def notice_set(workspace_id, kind, pairs, as_json):
    """Validate and store (encrypted) the channel notices go to; prints it with secrets masked."""
    _store_channel(kind, notices.kind_class, notices.configure_notice, workspace_id, pairs, as_json)


@notice.command("show")
@workspace_option
@json_option
@with_appcontext
def notice_show(workspace_id, as_json):
    """Print the notice channel, the channels to contacts (secrets masked) and the frequency caps."""
    runtime = _runtime()
    try:
        view = notices.show_notice(runtime, workspace_id)
        contact_view = messages.show_channels(runtime, workspace_id)
    except HubError as exc:
        raise click.ClickException(str(exc)) from None
    emit({**view, **contact_view} if as_json else _show_lines(view, contact_view), as_json)


@notice.command("channel")
@workspace_option
@click.option("--channel", required=True, help=f"a channel to contacts: {', '.join(messages.OWN_CHANNELS)} "
                                               "(email messages use the notice channel when it is email)")
@click.option("--setting", "pairs", multiple=True, metavar="NAME=VALUE",
              help="a channel setting, e.g. url=https://crm.example.com/hooks (repeatable)")
@json_option
@with_appcontext
def notice_channel(workspace_id, channel, pairs, as_json):
    """Validate and store (encrypted) a channel for `message` effects; prints it with secrets masked."""
    _store_channel(channel, messages.channel_kind, messages.configure_channel, workspace_id, pairs, as_json)


def _store_channel(kind: str, kind_class, configure, workspace_id: str, pairs, as_json: bool) -> None:
    """Parse NAME=VALUE settings for the kind, store them through `configure`, print them masked."""
    try:
        settings = parse_settings(kind_class(kind), pairs)
        masked = configure(_runtime(), workspace_id, kind, settings)
    except ValidationError as exc:
        _settings_error(kind, exc)
    except HubError as exc:
        raise click.ClickException(str(exc)) from None
    view = {"kind": kind, "settings": masked}
    emit(view if as_json else _printable(view), as_json)


@notice.command("cap")
@workspace_option
@click.option("--channel", required=True, type=click.Choice(MESSAGE_CHANNELS))
@click.option("--max", "max_messages", required=True, type=click.IntRange(*caps.MAX_RANGE),
              help="messages to one contact on this channel ...")
@click.option("--days", required=True, type=click.IntRange(*caps.DAYS_RANGE), help="... within this many days")
@json_option
@with_appcontext
def notice_cap(workspace_id, channel, max_messages, days, as_json):
    """Set a frequency cap on `message` effects (default 3 per 7 days per contact and channel)."""
    try:
        emit(caps.set_cap(_runtime(), workspace_id, channel, max_messages, days), as_json)
    except HubError as exc:
        raise click.ClickException(str(exc)) from None


@notice.command("test")
@workspace_option
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
