"""Connect a workspace to running fakes (tests, the sync simulation, `hub demo`).

    with serve(HubSpotFake()) as hs, serve(SalesforceFake()) as sf:
        point_runtime_at(runtime, hubspot_url=hs.url, salesforce_login_url=sf.url)
        connect_hubspot_fake(runtime, workspace_id, hs_fake)
        connect_salesforce_fake(runtime, workspace_id, sf_fake)
        connector = registry.connector_for(runtime, workspace_id, "hubspot")
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

from hub import admin
from hub.sandbox import hubspot_fake, salesforce_fake


def point_runtime_at(runtime, hubspot_url: str | None = None, salesforce_login_url: str | None = None) -> None:
    changes = {}
    if hubspot_url:
        changes["hubspot_api_base"] = hubspot_url.rstrip("/")
    if salesforce_login_url:
        changes["salesforce_login_url"] = salesforce_login_url.rstrip("/")
    runtime.settings = dataclasses.replace(runtime.settings, **changes)


def connect_hubspot_fake(runtime, workspace_id: str, fake: "hubspot_fake.HubSpotFake",
                         access_token: str | None = None, expires_in: float | None = None) -> dict:
    """Store a HubSpot connection whose tokens the fake accepts (and can refresh)."""
    token = access_token or next(iter(fake.tokens))
    return admin.connect(runtime, workspace_id, "hubspot", str(fake.portal_id), {
        "access_token": token, "refresh_token": hubspot_fake.REFRESH_TOKEN,
        "expires_at": time.time() + expires_in if expires_in else None,
        "client_id": hubspot_fake.CLIENT_ID, "client_secret": hubspot_fake.CLIENT_SECRET,
        "app_secret": fake.app_secret}, {"app_id": str(fake.app_id)})


def connect_salesforce_fake(runtime, workspace_id: str, fake: "salesforce_fake.SalesforceFake",
                            access_token: str | None = None, **settings) -> dict:
    """Store a Salesforce connection to the fake org (instance and login URL = the fake's URL)."""
    token = access_token or next(iter(fake.tokens))
    return admin.connect(runtime, workspace_id, "salesforce", salesforce_fake.ORG_ID, {
        "access_token": token, "refresh_token": salesforce_fake.REFRESH_TOKEN,
        "client_id": salesforce_fake.CLIENT_ID, "client_secret": salesforce_fake.CLIENT_SECRET},
        {"instance_url": fake.base_url, "login_url": fake.base_url,
         "integration_user_id": fake.integration_user, **settings})


SOAP_HEADERS = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
HUBSPOT_WEBHOOK_PATH = "/webhooks/hubspot"


def deliver_webhooks(hubspot: "hubspot_fake.HubSpotFake", salesforce: "salesforce_fake.SalesforceFake",
                     post: Callable[[str, bytes, dict], object], hub_url: str, salesforce_path: str,
                     object_types: tuple[str, ...] = ("Lead",)) -> dict[str, int]:
    """Post what the sandboxes would send now to the hub: HubSpot's webhook batches (signed for
    `hub_url` + /webhooks/hubspot), then the org's Outbound Messages for `object_types`.

    `post(path, body, headers)` sends one delivery (a test client, or HTTP); returns deliveries per CRM.
    """
    posted = {"hubspot": 0, "salesforce": 0}
    for batch in hubspot.take_webhook_batches():
        body, headers = hubspot.signed_delivery(batch, hub_url.rstrip("/") + HUBSPOT_WEBHOOK_PATH)
        post(HUBSPOT_WEBHOOK_PATH, body, headers)
        posted["hubspot"] += 1
    for object_type in object_types:
        for body in salesforce.take_outbound_messages(object_type):
            post(salesforce_path, body, SOAP_HEADERS)
            posted["salesforce"] += 1
    return posted
