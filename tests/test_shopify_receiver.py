"""Shopify: documented HMAC vectors, refusals with no row, dedupe on X-Shopify-Event-Id, customers and orders."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tests.conftest import fixture_bytes, fixture_json
from tests.receiver_helpers import add_source, change, count, handled, nothing_stored, rows
from hub.sandbox.signing import shopify_headers
from webhooks import shopify

SPEC = fixture_json("shopify/headers-and-signature.json")
VECTORS = SPEC["signature"]["worked_example"]
SECRET = VECTORS["secret"]
CUSTOMER = fixture_bytes("shopify/customers-create__sample.json")   # exact bytes the vectors sign
ORDER = fixture_bytes("shopify/orders-create__sample.json")
CUSTOMER_HEADERS = SPEC["request_headers_example_customers_create"]
ORDER_HEADERS = SPEC["request_headers_example_orders_create"]


@pytest.fixture
def path(runtime, workspace):
    return add_source(runtime, workspace, "shopify", SECRET)


def test_documented_vectors():
    assert shopify.signature(SECRET, CUSTOMER) == VECTORS["customers-create.min.json"]
    assert shopify.signature(SECRET, ORDER) == VECTORS["orders-create.min.json"]


def test_the_documented_delivery_is_stored_and_its_redelivery_is_deduplicated(client, runtime, path):
    assert client.post(path, data=CUSTOMER, headers=CUSTOMER_HEADERS).json == {"accepted": 1, "duplicates": 0}
    again = client.post(path, data=CUSTOMER, headers=CUSTOMER_HEADERS)
    assert again.status_code == 200 and again.json == {"accepted": 0, "duplicates": 1}
    assert count(runtime) == 1


def test_ids_beyond_2_to_the_53_survive_exactly(client, runtime, path):
    assert client.post(path, data=ORDER, headers=ORDER_HEADERS).status_code == 200
    stored = rows(runtime)[0].payload
    assert stored["resource"]["id"] == 820982911946154508 and stored["event_id"] == ORDER_HEADERS["X-Shopify-Event-Id"]
    assert handled(shopify, rows(runtime)[0])[0]["activity"]["properties"]["order_id"] == "820982911946154508"


@pytest.mark.parametrize("case, reason", [
    ("forged", "bad_signature"), ("wrong_secret", "bad_signature"), ("missing", "missing_signature"),
    ("hex", "bad_signature"),
])
def test_refused_requests_answer_401_and_leave_no_row(client, runtime, path, case, reason):
    body, headers = CUSTOMER, dict(CUSTOMER_HEADERS)
    if case == "forged":
        body = CUSTOMER.replace(b"bob@biller.com", b"eve@biller.com")
    elif case == "wrong_secret":
        headers = shopify_headers("not-hush", CUSTOMER, "customers/create", "e-1")
    elif case == "missing":
        del headers["X-Shopify-Hmac-Sha256"]
    elif case == "hex":
        import base64
        headers["X-Shopify-Hmac-Sha256"] = base64.b64decode(headers["X-Shopify-Hmac-Sha256"]).hex()
    response = client.post(path, data=body, headers=headers)
    assert response.status_code == 401 and response.json["error"] == reason
    assert nothing_stored(runtime)


def test_signed_delivery_without_a_topic_is_400_and_kept_for_inspection(client, runtime, path):
    headers = {k: v for k, v in CUSTOMER_HEADERS.items() if k != "X-Shopify-Topic"}
    response = client.post(path, data=CUSTOMER, headers=headers)
    assert response.status_code == 400 and response.json["error"] == "missing_topic"
    assert [row.status for row in rows(runtime)] == ["malformed"]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


BOB = {"email": "bob@biller.com", "first_name": "Bob", "last_name": "Biller", "phone": "555-555-5555",
       "company": "Biller Corp", "country": "CA", "state": "Ontario", "city": "Ottawa"}
SHOP_CUSTOMER = {"system": "shop", "external_id": "shopify:706405506930370084", "object_type": "customer"}
HANDLED = [
    # "not_subscribed" is no statement about consent, so no consent flag is set
    ("customers/create", CUSTOMER, [change(**SHOP_CUSTOMER, fields=BOB, changed_at=utc("2026-11-25T13:04:11-05:00"))]),
    ("customers/update", CUSTOMER, [change(**SHOP_CUSTOMER, fields=BOB, changed_at=utc("2026-11-25T13:04:11-05:00"))]),
    ("orders/create", ORDER, [change(
        **SHOP_CUSTOMER, fields=BOB, consent={"email": True}, changed_at=utc("2026-11-25T13:05:01-05:00"),
        activity={"kind": "purchase", "occurred_at": utc("2026-11-25T13:05:00-05:00"), "properties": {
            "source": "shopify", "shop": "example-shop.myshopify.com", "order_id": "820982911946154508",
            "order_name": "#1001", "total": "409.94", "currency": "USD", "financial_status": "paid", "items": 2}})]),
]


@pytest.mark.parametrize("topic, body, expected", HANDLED, ids=[case[0] for case in HANDLED])
def test_handlers_turn_stored_deliveries_into_changes(client, runtime, path, topic, body, expected):
    assert client.post(path, data=body, headers=shopify_headers(SECRET, body, topic, "evt-1")).status_code == 200
    assert [c for row in rows(runtime) for c in handled(shopify, row)] == expected
