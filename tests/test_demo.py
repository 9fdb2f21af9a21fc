"""`hub demo`: the whole loop against the sandbox CRMs, on the embedded default, checks what it shows."""
from __future__ import annotations

from click.testing import CliRunner

from hub import demo
from hub.cli import main
from hub.sandbox.salesforce_fake import SalesforceFake


def test_demo_runs_the_whole_loop_and_says_what_each_crm_shows():
    result = CliRunner().invoke(main, ["demo"])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[-1].startswith("demo OK")
    assert any("lifecyclestage=marketingqualifiedlead owner=111 hub_score=55 hub_grade=B" in line for line in lines)
    assert any("Status='Working - Contacted' OwnerId=0055g00000ALICEAAA" in line for line in lines)
    assert "HubSpot jobtitle='Chief Marketing Officer'" in result.output
    assert "Salesforce Phone='+12025550123'" in result.output
    assert result.output.count("(the echo was recognised)") == 2


def test_demo_fails_when_a_crm_change_never_reaches_the_hub(monkeypatch):
    """The demo's checks have teeth: Salesforce's Outbound Messages lost -> the HubSpot check fails."""
    monkeypatch.setattr(SalesforceFake, "take_outbound_messages", lambda self, *args, **kwargs: [])
    said: list[str] = []

    assert demo.run(said.append) == 1
    assert said[-1] == "demo FAILED: HubSpot shows the Salesforce edit"
