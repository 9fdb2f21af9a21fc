"""WooCommerce webhooks: customer.* and order.* topics, base64 HMAC-SHA256 of the raw body.

The creation ping (`webhook_id=<id>`, unsigned, not JSON) must be answered 200 exactly and is not
stored. `X-WC-Webhook-Delivery-ID` changes every second, so it is not an event id: events are
deduplicated on the store, topic, resource id and its modification time. Core WooCommerce does
not retry, so a refused delivery is lost: reconciliation belongs to a poll, not to this module.
"""
from __future__ import annotations

import logging
import re
from typing import Mapping
from urllib.parse import urlsplit

from flask import Response

from hub.changes import ActivitySpec, ContactChange
from hub.exceptions import PayloadError
from webhooks.common import (
    IncomingEvent,
    bounded_key,
    from_iso,
    hmac_sha256_b64,
    is_blank,
    load_json,
    sha256_hex,
    verify_hmac,
)

logger = logging.getLogger(__name__)

SOURCE = "woocommerce"
SIGNATURE_HEADER = "X-WC-Webhook-Signature"
META_HEADERS = {"topic": "X-WC-Webhook-Topic", "source_url": "X-WC-Webhook-Source",
                "webhook_id": "X-WC-Webhook-ID", "delivery_id": "X-WC-Webhook-Delivery-ID"}
_PING = re.compile(rb"^webhook_id=\d+$")


def signature(secret: str, body: bytes) -> str:
    return hmac_sha256_b64(secret, body)


def unsigned_response(request) -> Response | None:
    """WooCommerce's creation ping: HTTP 200 exactly (201/204 fail it), nothing stored."""
    if request.headers.get(SIGNATURE_HEADER) or not _PING.match(request.get_data(cache=True).strip()):
        return None
    logger.info("woocommerce creation ping answered")
    return Response("", status=200, content_type="text/plain")


def verify(request, secret: str) -> None:
    verify_hmac(signature(secret, request.get_data(cache=True)), request.headers.get(SIGNATURE_HEADER))


def store_host(source_url: str | None) -> str:
    """Resource ids are per store: the store's host keeps two stores' customer 25 apart."""
    return (urlsplit(source_url or "").netloc or source_url or "").lower()


def parse(body: bytes, headers: Mapping[str, str] | None = None) -> list[IncomingEvent]:
    meta = {name: (headers or {}).get(header) for name, header in META_HEADERS.items()}
    if not meta["topic"]:
        raise PayloadError("missing_topic", f"{META_HEADERS['topic']} header is missing")
    resource = load_json(body)
    if not isinstance(resource, dict):
        raise PayloadError("malformed_payload", "expected a WooCommerce JSON object")
    modified = resource.get("date_modified_gmt") or resource.get("date_modified")
    # Resources have an id; action.* topics do not and are keyed by their signed bytes.
    identity = resource["id"] if "id" in resource else f"body-{sha256_hex(body)}"
    key = bounded_key(SOURCE, store_host(meta["source_url"]), meta["topic"], identity, modified)
    payload = {**meta, "resource": resource}
    return [IncomingEvent(source=SOURCE, kind=meta["topic"], dedupe_key=key, payload=payload,
                          occurred_at=from_iso(modified), account_id=store_host(meta["source_url"]) or None)]


def parse_request(request) -> list[IncomingEvent]:
    return parse(request.get_data(cache=True), request.headers)


# --- handlers -------------------------------------------------------------------------------------

def _contact_change(payload: dict, customer_id, person: dict, billing: dict, changed_at) -> ContactChange:
    fields = {"email": person.get("email") or billing.get("email"),
              "first_name": person.get("first_name") or billing.get("first_name"),
              "last_name": person.get("last_name") or billing.get("last_name"),
              "phone": billing.get("phone"), "company": billing.get("company"), "country": billing.get("country"),
              "state": billing.get("state"), "city": billing.get("city")}
    fields = {name: value for name, value in fields.items() if not is_blank(value)}
    # customer_id 0 is a guest checkout: no store identity, the email resolves the person.
    external_id = f"woocommerce:{store_host(payload.get('source_url'))}:{customer_id}" if customer_id else None
    return ContactChange(system="shop", external_id=external_id, object_type="customer", fields=fields,
                         changed_at=changed_at)


def _modified(resource: dict):
    return from_iso(resource.get("date_modified_gmt") or resource.get("date_modified"))


def customer_changes(payload: dict) -> list[ContactChange]:
    customer = payload["resource"]
    return [_contact_change(payload, customer.get("id"), customer, customer.get("billing") or {},
                            _modified(customer))]


def _order_contact(payload: dict) -> ContactChange:
    order = payload["resource"]
    billing = order.get("billing") or {}
    return _contact_change(payload, order.get("customer_id"), {}, billing, _modified(order))


def order_created(payload: dict) -> list[ContactChange]:
    order = payload["resource"]
    change = _order_contact(payload)
    change.activity = ActivitySpec(kind="purchase", occurred_at=from_iso(order.get("date_created_gmt")), properties={
        "source": SOURCE, "shop": store_host(payload.get("source_url")), "order_id": str(order["id"]),
        "order_number": order.get("number"), "total": order.get("total"), "currency": order.get("currency"),
        "status": order.get("status"),
        "items": sum(int(item.get("quantity") or 0) for item in order.get("line_items") or []),
    })
    return [change]


def order_updated(payload: dict) -> list[ContactChange]:
    """Contact details only: order.updated fires several times per checkout, the purchase is counted once."""
    return [_order_contact(payload)]


HANDLERS = {
    "customer.created": customer_changes,
    "customer.updated": customer_changes,
    "order.created": order_created,
    "order.updated": order_updated,
}
