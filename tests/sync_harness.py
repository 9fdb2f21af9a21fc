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
from hub.sandbox.wiring import connect_hubspot_fake, connect_salesforce_fake, point_runtime_at
from tests.conftest import run_pipeline

HUBSPOT_URL = "http://localhost/webhooks/hubspot"
SOAP = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}


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
            deliveries = self._deliveries()
            if not deliveries:
                return
            for post in deliveries:
                post()
            run_pipeline(self.runtime)
        raise AssertionError("webhooks still flowing: the CRMs ping-pong")

    def _deliveries(self) -> list:
        posts = [lambda batch=batch: self._post_hubspot(batch) for batch in self.hubspot.take_webhook_batches()]
        for object_type in ("Lead", "Contact"):
            posts += [lambda body=body: self._post_salesforce(body)
                      for body in self.salesforce.take_outbound_messages(object_type)]
        return posts

    def _post_hubspot(self, batch: list[dict]) -> None:
        body, headers = self.hubspot.signed_delivery(batch, HUBSPOT_URL)
        response = self.client.post("/webhooks/hubspot", data=body, headers=headers)
        assert response.status_code == 200, response.data

    def _post_salesforce(self, body: bytes) -> None:
        response = self.client.post(self.salesforce_path, data=body, headers=SOAP)
        assert response.status_code == 200, response.data

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
