"""Token refresh: ahead of expiry, once on 401, one refresh for many workers, new tokens stored encrypted.

Connectors are built by the registry from the stored Connection, as workers build them; the fakes
count requests to their token endpoints.
"""
from __future__ import annotations

import threading
import time

import pytest
import responses

from hub.connectors import registry
from hub.connectors.base import CrmRecord
from hub.exceptions import FatalError, TokenExpiredError
from hub.sync.tokens import CredentialStore, SalesforceTokens
from tests.conftest import fixture_json
from hub.sandbox.hubspot_fake import HubSpotFake
from hub.sandbox.salesforce_fake import SalesforceFake
from hub.sandbox.server import serve
from hub.sandbox.validation import hubspot_violations, salesforce_violations
from hub.sandbox.wiring import connect_hubspot_fake, connect_salesforce_fake, point_runtime_at


@pytest.fixture
def hubspot(runtime, workspace):
    fake = HubSpotFake()
    with serve(fake) as server:
        point_runtime_at(runtime, hubspot_url=server.url)
        yield fake
    assert hubspot_violations(fake.requests) == []


@pytest.fixture
def salesforce(runtime, workspace):
    fake = SalesforceFake()
    with serve(fake) as server:
        point_runtime_at(runtime, salesforce_login_url="http://127.0.0.1:9")   # unused: the connection names its own
        yield fake
    assert salesforce_violations(fake.requests) == []


def stored(runtime, workspace, kind: str) -> tuple[dict, str]:
    from sqlalchemy import select

    from hub.db import transaction
    from hub.models import Connection

    with transaction(runtime.engine) as session:
        row = session.scalar(select(Connection).where(Connection.workspace_id == workspace["workspace_id"],
                                                      Connection.kind == kind))
        return runtime.vault.decrypt_json(row.credentials), row.credentials


def sync_log(runtime) -> list:
    from sqlalchemy import select

    from hub.db import transaction
    from hub.models import SyncLog

    with transaction(runtime.engine) as session:
        return session.scalars(select(SyncLog).order_by(SyncLog.id)).all()


def contacts(prefix: str, count: int) -> list[CrmRecord]:
    return [CrmRecord("contact", None, {"email": f"{prefix}{i}@example.com", "firstname": "P"}) for i in range(count)]


def test_hubspot_token_near_expiry_is_refreshed_ahead(runtime, workspace, hubspot):
    connect_hubspot_fake(runtime, workspace["workspace_id"], hubspot, expires_in=60)   # inside the 5-minute margin
    connector = registry.connector_for(runtime, workspace["workspace_id"], "hubspot")
    connector.find_by_email(["jane@example.com"])
    assert hubspot.token_requests == 1
    assert [r.status for r in hubspot.api_requests()] == [207]     # not found (207), and no 401 was needed
    credentials, ciphertext = stored(runtime, workspace, "hubspot")
    assert credentials["access_token"].startswith("fake-hs-access-")
    assert credentials["expires_at"] > time.time() + 1700
    assert credentials["access_token"] not in ciphertext
    connector.find_by_email(["jane@example.com"])
    assert hubspot.token_requests == 1
    assert [(r.operation, r.status, r.http_status) for r in sync_log(runtime)] == [
        ("oauth.refresh", "ok", 200), ("contacts.batch_read", "ok", 207), ("contacts.batch_read", "ok", 207)]


def test_hubspot_token_expiring_mid_run_is_refreshed_once_and_no_write_is_lost(runtime, workspace, hubspot):
    connect_hubspot_fake(runtime, workspace["workspace_id"], hubspot)
    hubspot.expire_token_after(calls=2)
    connector = registry.connector_for(runtime, workspace["workspace_id"], "hubspot")
    results = connector.batch_upsert(contacts("p", 500))
    assert all(r.ok for r in results) and len(hubspot.contacts) == 500
    assert hubspot.token_requests == 1
    assert [r.status for r in hubspot.api_requests()] == [200, 200, 401, 200, 200, 200]


def test_concurrent_hubspot_workers_refresh_once(runtime, workspace, hubspot):
    connect_hubspot_fake(runtime, workspace["workspace_id"], hubspot)
    hubspot.expire_token_after(calls=0)
    barrier = threading.Barrier(6)
    failures: list[BaseException] = []

    def worker(index: int) -> None:
        connector = registry.connector_for(runtime, workspace["workspace_id"], "hubspot")
        barrier.wait()
        try:
            assert all(r.ok for r in connector.batch_upsert(contacts(f"w{index}-", 20)))
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread below
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []
    assert hubspot.token_requests == 1
    assert len(hubspot.contacts) == 120


def test_a_token_refused_again_after_the_refresh_is_not_refreshed_twice(runtime, workspace, hubspot):
    connect_hubspot_fake(runtime, workspace["workspace_id"], hubspot)
    hubspot.expire_token_after(calls=0)
    hubspot.issued_token_calls = 0
    connector = registry.connector_for(runtime, workspace["workspace_id"], "hubspot")
    with pytest.raises(TokenExpiredError):
        connector.find_by_email(["jane@example.com"])
    assert hubspot.token_requests == 1
    assert [r.status for r in hubspot.api_requests()] == [401, 401]


def test_a_refused_refresh_token_is_fatal_with_the_vendor_code(runtime, workspace, hubspot):
    from hub import admin

    connect_hubspot_fake(runtime, workspace["workspace_id"], hubspot, expires_in=10)
    credentials, _ = stored(runtime, workspace, "hubspot")
    admin.connect(runtime, workspace["workspace_id"], "hubspot", str(hubspot.portal_id),
                  {**credentials, "refresh_token": "revoked"})
    connector = registry.connector_for(runtime, workspace["workspace_id"], "hubspot")
    with pytest.raises(FatalError) as refused:
        connector.find_by_email(["jane@example.com"])
    assert refused.value.code == "BAD_REFRESH_TOKEN"
    assert hubspot.token_requests == 1 and hubspot.api_requests() == []
    [row] = sync_log(runtime)
    assert (row.operation, row.status, row.http_status) == ("oauth.refresh", "error", 400)
    assert "BAD_REFRESH_TOKEN" in row.error and "revoked" not in row.error


def test_salesforce_invalid_session_refreshes_once_and_keeps_the_refresh_token(runtime, workspace, salesforce):
    connect_salesforce_fake(runtime, workspace["workspace_id"], salesforce)
    salesforce.expire_token_after(calls=1)
    connector = registry.connector_for(runtime, workspace["workspace_id"], "salesforce")
    leads = [CrmRecord("Lead", None, {"Email": f"p{i}@example.com", "LastName": "L", "Company": "X"}) for i in range(300)]
    results = connector.batch_upsert(leads)
    assert all(r.ok for r in results) and len(salesforce.records["Lead"]) == 300
    assert salesforce.token_requests == 1
    statuses = [r.status for r in salesforce.api_requests()]
    assert statuses.count(401) == 1
    credentials, ciphertext = stored(runtime, workspace, "salesforce")
    assert credentials["access_token"].startswith("00D5g000004ABCD!fake-refreshed-")
    assert credentials["refresh_token"] == "5Aep861FakeRefreshTokenValueForTestsOnly"   # not returned, kept
    assert credentials["instance_url"] == salesforce.base_url
    assert credentials["access_token"] not in ciphertext


def test_concurrent_salesforce_workers_refresh_once(runtime, workspace, salesforce):
    connect_salesforce_fake(runtime, workspace["workspace_id"], salesforce)
    salesforce.expire_token_after(calls=0)
    barrier = threading.Barrier(5)
    failures: list[BaseException] = []

    def worker(index: int) -> None:
        connector = registry.connector_for(runtime, workspace["workspace_id"], "salesforce")
        barrier.wait()
        try:
            connector.describe_fields("Lead")
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread below
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == [] and salesforce.token_requests == 1


def test_salesforce_refresh_uses_the_documented_answer_and_its_instance_url(runtime, workspace):
    """The refresh answer from Salesforce's docs (no expires_in, no refresh_token) moves the instance."""
    from hub import admin

    answer = fixture_json("salesforce-rest/oauth-token__refresh.json")
    admin.connect(runtime, workspace["workspace_id"], "salesforce", "00D5g000004ABCDEA2",
                  {"access_token": "old", "refresh_token": "r1", "client_id": "c", "client_secret": "s"},
                  {"instance_url": "https://old.my.salesforce.com", "login_url": "https://login.salesforce.com"})
    tokens = SalesforceTokens(CredentialStore(runtime, workspace["workspace_id"], "salesforce"), runtime.redis(),
                              login_url="https://unused.example.com")
    with responses.RequestsMock() as mocked:
        mocked.post("https://login.salesforce.com/services/oauth2/token", json=answer)
        assert tokens.refresh("old") == answer["access_token"]
        form = mocked.calls[0].request.body
    assert "grant_type=refresh_token" in form and "refresh_token=r1" in form and "client_id=c" in form
    assert tokens.instance_url() == "https://example-dev-ed.my.salesforce.com"
    credentials, _ = stored(runtime, workspace, "salesforce")
    assert (credentials["refresh_token"], credentials["issued_at"]) == ("r1", answer["issued_at"])


def test_hubspot_refresh_posts_the_documented_form_and_reads_expires_in(runtime, workspace):
    from hub import admin
    from hub.sync.tokens import HubSpotTokens

    answer = fixture_json("hubspot/oauth-token-response.json")["refresh_token_grant"]
    admin.connect(runtime, workspace["workspace_id"], "hubspot", "62515",
                  {"access_token": "old", "refresh_token": answer["refresh_token"], "client_id": "c",
                   "client_secret": "s", "expires_at": time.time() + 30})
    tokens = HubSpotTokens(CredentialStore(runtime, workspace["workspace_id"], "hubspot"), runtime.redis(),
                           api_base="https://api.hubapi.com")
    with responses.RequestsMock() as mocked:
        mocked.post("https://api.hubapi.com/oauth/v1/token", json=answer)
        assert tokens.access_token() == answer["access_token"]          # expiring: refreshed ahead
        request = mocked.calls[0].request
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert "grant_type=refresh_token" in request.body and "client_secret=s" in request.body
    assert tokens.credentials["expires_at"] == pytest.approx(time.time() + 1800, abs=5)


def test_a_token_expiring_at_a_fake_clock_time_is_refreshed_on_the_401(runtime, workspace):
    from hub.sandbox.common import FakeClock

    clock = FakeClock()
    fake = HubSpotFake(clock=clock)
    with serve(fake) as server:
        point_runtime_at(runtime, hubspot_url=server.url)
        connect_hubspot_fake(runtime, workspace["workspace_id"], fake)        # expiry unknown to the hub
        fake.expire_token_after(at=clock.now() + 60)
        connector = registry.connector_for(runtime, workspace["workspace_id"], "hubspot")
        assert connector.batch_upsert(contacts("a", 3))[0].ok
        clock.advance(120)
        assert all(r.ok for r in connector.batch_upsert(contacts("b", 3)))
    assert fake.token_requests == 1
    assert [r.status for r in fake.api_requests()] == [200, 401, 200]
    assert hubspot_violations(fake.requests) == []
