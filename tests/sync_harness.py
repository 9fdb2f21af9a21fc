"""Both loopback CRMs served and connected to a workspace, with webhooks delivered through the hub's routes.

    with two_crms(runtime, client, workspace_id) as crms:
        crms.hubspot.ui_edit("a@example.com", {"firstname": "Ann"})
        crms.deliver()                      # webhooks in, events processed, pushes written
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import select

from hub.db import transaction
from hub.models import Contact, Identity, SyncLog
from hub.sandbox.hubspot_fake import HubSpotFake
from hub.sandbox.salesforce_fake import SalesforceFake
from hub.sandbox.server import serve
from hub.sandbox.validation import hubspot_violations, salesforce_violations
from hub.sandbox.wiring import connect_hubspot_fake, connect_salesforce_fake, deliver_webhooks, point_runtime_at
from tests.conftest import run_pipeline

HUB_URL = "http://localhost"


def post_with(client):
    """A `post(path, body, headers)` for deliver_webhooks that sends through a Flask test client and expects 200."""
    def post(path: str, body: bytes, headers: dict) -> None:
        response = client.post(path, data=body, headers=headers)
        assert response.status_code == 200, response.data
    return post


@dataclass
class TwoCrms:
    runtime: object
    client: object
    workspace_id: str
    hubspot: HubSpotFake
    salesforce: SalesforceFake
    salesforce_path: str

    def deliver(self, rounds: int = 6) -> None:
        """Deliver every queued webhook (HubSpot batches, Outbound Messages) and run the pipeline, until quiet."""
        for _ in range(rounds):
            posted = deliver_webhooks(self.hubspot, self.salesforce, post_with(self.client), HUB_URL,
                                      self.salesforce_path, object_types=("Lead", "Contact"))
            if not sum(posted.values()):
                return
            run_pipeline(self.runtime)
        raise AssertionError("webhooks still flowing: the CRMs ping-pong")

    # --- what the hub holds ---------------------------------------------------------------------

    def contacts(self) -> list[Contact]:
        with transaction(self.runtime.engine) as session:
            return list(session.scalars(select(Contact).where(Contact.workspace_id == self.workspace_id)))

    def identities(self, contact_id: str) -> set[tuple[str, str]]:
        with transaction(self.runtime.engine) as session:
            return {tuple(row) for row in session.execute(select(Identity.system, Identity.external_id).where(
                Identity.contact_id == contact_id)).all()}

    def decisions(self, prefix: str) -> list[SyncLog]:
        with transaction(self.runtime.engine) as session:
            return list(session.scalars(select(SyncLog).where(
                SyncLog.workspace_id == self.workspace_id, SyncLog.status == "decision",
                SyncLog.operation.startswith(prefix)).order_by(SyncLog.id)))

    def violations(self) -> list[str]:
        return hubspot_violations(self.hubspot.requests) + salesforce_violations(self.salesforce.requests)


@contextmanager
def two_crms(runtime, client, workspace_id: str, **salesforce_settings):
    hubspot, salesforce = HubSpotFake(), SalesforceFake()
    with serve(hubspot) as hs_server, serve(salesforce) as sf_server:
        point_runtime_at(runtime, hubspot_url=hs_server.url, salesforce_login_url=sf_server.url)
        connect_hubspot_fake(runtime, workspace_id, hubspot)
        answer = connect_salesforce_fake(runtime, workspace_id, salesforce, **salesforce_settings)
        path = "/" + answer["webhook_url"].split("/", 3)[3]
        yield TwoCrms(runtime, client, workspace_id, hubspot, salesforce, path)
