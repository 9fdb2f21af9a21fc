"""`hub notice set|show|test`: an admin sets up the notice channel; bad input stores nothing."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hub.cli import main as hub_cli
from hub.db import transaction
from hub.models import Workspace

SLACK_URL_PATH = "/services/T000/B000/XXXX"


@pytest.fixture
def ws(workspace) -> str:
    return workspace["workspace_id"]


def invoke(*args):
    return CliRunner().invoke(hub_cli, ["notice", *args])


def stored(runtime, ws) -> dict | None:
    with transaction(runtime.engine) as session:
        return (session.get(Workspace, ws).settings or {}).get("notice")


def test_set_slack_stores_it_encrypted_and_prints_the_secret_masked(runtime, ws):
    url = "https://hooks.slack.com" + SLACK_URL_PATH

    result = invoke("set", "--workspace", ws, "--kind", "slack", "--setting", f"webhook_url={url}")

    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["kind: slack", "webhook_url: ***", "timeout: 10"]
    entry = stored(runtime, ws)
    assert entry["kind"] == "slack" and SLACK_URL_PATH not in json.dumps(entry)
    assert runtime.vault.decrypt_json(entry["settings"])["webhook_url"] == url


def test_set_email_takes_a_list_of_recipients_and_show_masks_the_password(runtime, ws):
    result = invoke("set", "--workspace", ws, "--kind", "email", "--setting", "host=smtp.example.com",
                    "--setting", "port=465", "--setting", "security=tls", "--setting", "username=hub",
                    "--setting", "password=s3cret", "--setting", "from_address=hub@example.com",
                    "--setting", "to=sales@example.com, ops@example.com", "--setting", "to=boss@example.com",
                    "--json")
    assert result.exit_code == 0, result.output

    shown = json.loads(invoke("show", "--workspace", ws, "--json").output)

    assert shown["kind"] == "email"
    assert shown["settings"]["password"] == "***" and shown["settings"]["port"] == 465
    assert shown["settings"]["to"] == ["sales@example.com", "ops@example.com", "boss@example.com"]
    assert json.loads(result.output) == {"kind": shown["kind"], "settings": shown["settings"]}
    assert "s3cret" not in invoke("show", "--workspace", ws).output


DEFAULT_CAP_LINES = ["cap.email: 3 per 7 days", "cap.sms: 3 per 7 days", "cap.webhook: 3 per 7 days"]


def test_show_without_a_channel_says_notices_are_logged_and_shows_the_default_caps(ws):
    result = invoke("show", "--workspace", ws)

    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["kind: log (no channel configured)", *DEFAULT_CAP_LINES]
    assert json.loads(invoke("show", "--workspace", ws, "--json").output) == {
        "kind": None, "settings": {}, "channels": {},
        "caps": {channel: {"max": 3, "days": 7} for channel in ("email", "sms", "webhook")}}


def test_show_for_an_unknown_workspace_fails(runtime):
    result = invoke("show", "--workspace", "nope")

    assert result.exit_code != 0 and "no workspace nope" in result.output


def test_cap_is_stored_per_channel_and_shown(runtime, ws):
    result = invoke("cap", "--workspace", ws, "--channel", "sms", "--max", "1", "--days", "30")

    assert (result.exit_code, result.output) == (0, "channel: sms\nmax: 1\ndays: 30\n")
    shown = invoke("show", "--workspace", ws).output.splitlines()
    assert shown[-3:] == ["cap.email: 3 per 7 days", "cap.sms: 1 per 30 days", "cap.webhook: 3 per 7 days"]


@pytest.mark.parametrize("args", [
    ["--channel", "fax", "--max", "1", "--days", "1"],
    ["--channel", "sms", "--max", "0", "--days", "1"],
    ["--channel", "sms", "--max", "2", "--days", "0"],
    ["--channel", "sms", "--max", "many", "--days", "1"],
])
def test_a_bad_cap_is_refused_and_nothing_is_stored(runtime, ws, args):
    result = invoke("cap", "--workspace", ws, *args)

    assert result.exit_code != 0
    with transaction(runtime.engine) as session:
        assert "message_caps" not in (session.get(Workspace, ws).settings or {})


@pytest.mark.parametrize("args, message", [
    (["--kind", "pager"], "unknown notice kind pager; one of email, slack"),
    (["--kind", "slack", "--setting", "webhook_url=not a url"], '"webhook_url": ["Not a valid URL."]'),
    (["--kind", "slack"], '"webhook_url": ["Missing data for required field."]'),
    (["--kind", "slack", "--setting", "webhook_url=https://hooks.slack.com/x", "--setting", "colour=red"],
     '"colour": ["Unknown field."]'),
    (["--kind", "email", "--setting", "host=smtp.example.com", "--setting", "from_address=hub@example.com",
      "--setting", "to=not-an-email"], '"to": {"0": ["Not a valid email address."]}'),
    (["--kind", "email", "--setting", "port=99999", "--setting", "host=h", "--setting", "from_address=a@b.io",
      "--setting", "to=c@d.io"], '"port": ["Must be greater than or equal to 1 and less than or equal to 65535."]'),
    (["--kind", "slack", "--setting", "webhook_url"], "--setting wants name=value"),
])
def test_bad_kind_or_setting_is_refused_and_the_stored_channel_is_untouched(runtime, ws, args, message):
    good = invoke("set", "--workspace", ws, "--kind", "slack", "--setting", "webhook_url=https://hooks.slack.com/a")
    assert good.exit_code == 0, good.output
    before = stored(runtime, ws)

    result = invoke("set", "--workspace", ws, *args)

    assert result.exit_code != 0
    assert message in result.output
    assert stored(runtime, ws) == before


def test_set_for_an_unknown_workspace_fails(runtime):
    result = invoke("set", "--workspace", "nope", "--kind", "slack", "--setting", "webhook_url=https://h.io/x")

    assert result.exit_code != 0 and "no workspace nope" in result.output


def test_test_without_a_channel_logs_the_notice(ws):
    result = invoke("test", "--workspace", ws)

    assert (result.exit_code, result.output) == (0, "channel: log\n")


def test_test_sends_a_notice_through_slack(ws, httpserver):
    httpserver.expect_oneshot_request(SLACK_URL_PATH, method="POST").respond_with_data("ok")
    invoke("set", "--workspace", ws, "--kind", "slack", "--setting", f"webhook_url={httpserver.url_for(SLACK_URL_PATH)}")

    result = invoke("test", "--workspace", ws)

    assert (result.exit_code, result.output) == (0, "channel: slack\n")
    httpserver.check_assertions()
    (request, _), = httpserver.log
    assert "lead hub test notice" in request.get_json()["text"]


def test_test_reports_a_refused_notice_with_a_failing_exit_code(ws, httpserver):
    httpserver.expect_request(SLACK_URL_PATH, method="POST").respond_with_data("no_service", status=404)
    invoke("set", "--workspace", ws, "--kind", "slack", "--setting", f"webhook_url={httpserver.url_for(SLACK_URL_PATH)}")

    result = invoke("test", "--workspace", ws)

    assert result.exit_code != 0
    assert "test notice not sent (FatalError: slack refused the message: no_service)" in result.output


def test_test_for_an_unknown_workspace_fails(runtime):
    result = invoke("test", "--workspace", "nope")

    assert result.exit_code != 0 and "no workspace nope" in result.output
