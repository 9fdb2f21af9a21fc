"""Salesforce polling armed for the orgs that opt in (`--poll-interval`), run on its interval, never twice."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from hub.cli import main as hub_cli
from hub.db import transaction
from hub.models import Connection, Contact, Outbox, utcnow
from hub.sandbox import salesforce_fake
from hub.sandbox.salesforce_fake import SalesforceFake
from hub.sandbox.server import serve
from hub.sandbox.validation import salesforce_violations
from hub.sandbox.wiring import point_runtime_at
from hub.sync import polling
from hub.sync.jobs import run_sync_outbox
from tests.conftest import run_pipeline


def _connect(workspace_id: str, url: str, *extra) -> CliRunner:
    return CliRunner().invoke(hub_cli, [
        "connect", "salesforce", "--workspace", workspace_id, "--instance-url", url, "--login-url", url,
        "--access-token", next(iter(SalesforceFake().tokens)), "--refresh-token", salesforce_fake.REFRESH_TOKEN,
        "--client-id", salesforce_fake.CLIENT_ID, "--org-id", salesforce_fake.ORG_ID, *extra, "--json"])


def _waiting(runtime) -> list[Outbox]:
    with transaction(runtime.engine) as session:
        return list(session.scalars(select(Outbox).where(Outbox.job == polling.JOB, Outbox.done_at.is_(None))))


@pytest.fixture
def fake_org(runtime):
    fake = SalesforceFake()
    with serve(fake) as server:
        point_runtime_at(runtime, salesforce_login_url=server.url)
        yield fake, server.url


def test_opted_in_org_is_polled_on_its_interval_with_one_chain(runtime, workspace, fake_org):
    fake, url = fake_org
    ws = workspace["workspace_id"]
    fake.ui_edit("Lead", None, {"Email": "pat@example.com", "LastName": "Pat", "Company": "Acme"})
    result = _connect(ws, url, "--poll-interval", "30")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["poll_interval"] == 30
    assert polling.arm_all(runtime) == 0 and polling.arm_all(runtime) == 0     # workers starting: no second chain
    [first] = _waiting(runtime)
    run_pipeline(runtime)                                                      # the first poll runs at once
    with transaction(runtime.engine) as session:
        assert session.scalar(select(Contact.email)) == "pat@example.com"
    [following] = _waiting(runtime)
    assert following.id != first.id
    assert 25 <= (following.available_at - utcnow()).total_seconds() <= 30   # the connection's interval
    run_sync_outbox([first.id])                      # the same row delivered twice: still one chain
    assert [row.id for row in _waiting(runtime)] == [following.id]
    assert salesforce_violations(fake.requests) == []


def test_a_second_delivery_does_not_poll_while_the_first_holds_the_lock(runtime, workspace, fake_org):
    fake, url = fake_org
    ws = workspace["workspace_id"]
    assert _connect(ws, url, "--poll-interval", "30").exit_code == 0
    [row] = _waiting(runtime)
    calls_before = len(fake.api_requests())          # connect checked the score fields (describe)
    lock = runtime.redis().lock(f"hub:poll-lock:{ws}:salesforce", timeout=30)
    assert lock.acquire(blocking=False)
    try:
        assert polling.run_poll_outbox(runtime, row)["skipped"] == "another worker is polling"
        assert len(fake.api_requests()) == calls_before
    finally:
        lock.release()


def test_poll_interval_is_validated_and_zero_ends_the_chain(runtime, workspace, fake_org):
    fake, url = fake_org
    ws = workspace["workspace_id"]
    refused = _connect(ws, url, "--poll-interval", "5")
    assert refused.exit_code != 0 and "at least" in refused.output
    with transaction(runtime.engine) as session:
        assert session.scalar(select(Connection.id)) is None                  # nothing half-written
    assert _connect(ws, url, "--poll-interval", "30").exit_code == 0
    [row] = _waiting(runtime)
    assert _connect(ws, url, "--poll-interval", "0").exit_code == 0
    with transaction(runtime.engine) as session:
        session.execute(Outbox.__table__.update().values(available_at=utcnow() - timedelta(seconds=1)))
    run_pipeline(runtime)
    assert _waiting(runtime) == []
    assert polling.arm_all(runtime) == 0


def test_orgs_that_did_not_opt_in_are_not_polled(runtime, workspace, fake_org):
    fake, url = fake_org
    assert _connect(workspace["workspace_id"], url).exit_code == 0
    assert polling.arm_all(runtime) == 0 and _waiting(runtime) == []
