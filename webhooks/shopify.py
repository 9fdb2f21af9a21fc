"""Shopify webhooks: customers/create, customers/update and orders/create, base64 HMAC of the raw body.

No timestamp is signed and deliveries repeat and arrive out of order, so events are deduplicated
on `X-Shopify-Event-Id` (a header: `parse_request` reads it) and carry the resource's
`updated_at`. Shopify ids exceed 2^53; they leave this module as strings.
"""
from __future__ import annotations

import logging
from typing import Mapping

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

SOURCE = "shopify"
SIGNATURE_HEADER = "X-Shopify-Hmac-Sha256"
# Headers kept with the event: which shop, which topic, and when Shopify fired it.
META_HEADERS = {"topic": "X-Shopify-Topic", "shop_domain": "X-Shopify-Shop-Domain",
                "event_id": "X-Shopify-Event-Id", "webhook_id": "X-Shopify-Webhook-Id",
                "triggered_at": "X-Shopify-Triggered-At", "api_version": "X-Shopify-API-Version"}
# "not_subscribed" says nothing (no opt-in was asked): it must not undo consent given elsewhere.
CONSENT_STATES = {"subscribed": True, "unsubscribed": False}


def signature(secret: str, body: bytes) -> str:
    return hmac_sha256_b64(secret, body)


def verify(request, secret: str) -> None:
    verify_hmac(signature(secret, request.get_data(cache=True)), request.headers.get(SIGNATURE_HEADER))


def parse(body: bytes, headers: Mapping[str, str] | None = None) -> list[IncomingEvent]:
    """`headers` are the delivery's headers; the topic and event id are not in the body."""
    meta = {name: (headers or {}).get(header) for name, header in META_HEADERS.items()}
    if not meta["topic"]:
        raise PayloadError("missing_topic", f"{META_HEADERS['topic']} header is missing")
    resource = load_json(body)
    if not isinstance(resource, dict) or "id" not in resource:
        raise PayloadError("malformed_payload", "expected a Shopify resource object with an id")
    # Event-Id is the documented dedupe key; without it, the signed body itself identifies the delivery.
    identity = meta["event_id"] or f"body-{sha256_hex(body)}"
    payload = {**meta, "resource": resource}
    return [IncomingEvent(source=SOURCE, kind=meta["topic"], dedupe_key=bounded_key(SOURCE, identity),
                          payload=payload, occurred_at=from_iso(resource.get("updated_at")),
                          account_id=meta["shop_domain"])]


def parse_request(request) -> list[IncomingEvent]:
    return parse(request.get_data(cache=True), request.headers)


# --- handlers -------------------------------------------------------------------------------------

def _consent(customer: dict) -> dict:
    consent = {}
    for channel, key in (("email", "email_marketing_consent"), ("sms", "sms_marketing_consent")):
        state = (customer.get(key) or {}).get("state")
        if state in CONSENT_STATES:
            consent[channel] = CONSENT_STATES[state]
    return consent


def _address_fields(address: dict) -> dict:
    return {"company": address.get("company"), "phone": address.get("phone"),
            "country": address.get("country_code") or address.get("country"),
            "state": address.get("province"), "city": address.get("city")}


def _customer_change(customer: dict, address: dict | None, changed_at) -> ContactChange:
    fields = {"email": customer.get("email"), "first_name": customer.get("first_name"),
              "last_name": customer.get("last_name"), "phone": customer.get("phone")}
    for name, value in _address_fields(address or {}).items():
        if is_blank(fields.get(name)):
            fields[name] = value
    fields = {name: value for name, value in fields.items() if not is_blank(value)}
    custom = {"shopify_tags": customer["tags"]} if customer.get("tags") else {}
    external_id = f"shopify:{customer['id']}" if customer.get("id") is not None else None
    return ContactChange(system="shop", external_id=external_id, object_type="customer", fields=fields,
                         consent=_consent(customer), custom=custom, changed_at=changed_at)


def customer_changes(payload: dict) -> list[ContactChange]:
    customer = payload["resource"]
    address = customer.get("default_address") or next(iter(customer.get("addresses") or []), None)
    return [_customer_change(customer, address, from_iso(customer.get("updated_at")))]


def order_changes(payload: dict) -> list[ContactChange]:
    order = payload["resource"]
    customer = dict(order.get("customer") or {})
    customer.setdefault("email", order.get("email") or order.get("contact_email"))
    if not customer.get("email_marketing_consent") and order.get("buyer_accepts_marketing") is not None:
        accepts = bool(order["buyer_accepts_marketing"])
        customer["email_marketing_consent"] = {"state": "subscribed" if accepts else "not_subscribed"}
    address = order.get("billing_address") or customer.get("default_address")
    change = _customer_change(customer, address, from_iso(order.get("updated_at")))
    change.activity = ActivitySpec(kind="purchase", occurred_at=from_iso(order.get("created_at")), properties={
        "source": SOURCE, "shop": payload.get("shop_domain"), "order_id": str(order["id"]),
        "order_name": order.get("name"), "total": order.get("total_price"), "currency": order.get("currency"),
        "financial_status": order.get("financial_status"),
        "items": sum(int(item.get("quantity") or 0) for item in order.get("line_items") or []),
    })
    return [change]


HANDLERS = {
    "customers/create": customer_changes,
    "customers/update": customer_changes,
    "orders/create": order_changes,
}
