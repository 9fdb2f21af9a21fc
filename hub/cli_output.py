"""What the CLI groups share (hub.cli, hub.rules.notice_cli): printing `name: value` lines or one
JSON object, and the options every such command takes."""
from __future__ import annotations

import json

import click


def emit(values: dict, as_json: bool) -> None:
    """`name: value` lines, or one JSON object with --json."""
    if as_json:
        click.echo(json.dumps(values))
    else:
        for name, value in values.items():
            click.echo(f"{name}: {value}")


def json_option(func):
    return click.option("--json", "as_json", is_flag=True, help="print one JSON object")(func)


def workspace_option(func):
    return click.option("--workspace", "workspace_id", required=True)(func)
