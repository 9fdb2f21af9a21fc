"""WooCommerce: documented HMAC vectors, the unsigned ping (200, no row), content-based dedupe, handlers."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from tests.conftest import fixture_bytes, fixture_json
from tests.receiver_helpers import add_source, change, count, handled, nothing_stored, rows
from hub.sandbox.signing import woocommerce_headers
from webhooks import woocommerce

SPEC = fixture_json("woocommerce/headers-and-signature.json")
VECTORS = SPEC["signature"]["worked_examples"]
SECRET = VECTORS["secret"]
CUSTOMER = fixture_bytes("woocommerce/customer.created__sample.json")   # exact bytes the vectors sign
ORDER = fixture_bytes("woocommerce/order.created__sample.json")
PING = fixture_bytes("woocommerce/ping__sample.txt")


@pytest.fixture
def path(runtime, workspace):
    return add_source(runtime, workspace, "woocommerce", SECRET)


def test_documented_vectors():
    assert woocommerce.signature(SECRET, CUSTOMER) == VECTORS["customer.created.min.json"]
    assert woocommerce.signature(SECRET, ORDER) == VECTORS["order.created.min.json"]


def test_the_creation_ping_gets_200_exactly_and_is_not_stored(client, runtime, path):
    response = client.post(path, data=PING, headers={"Content-Type": "application/x-www-form-urlencoded",
                                                     "User-Agent": "WooCommerce/9.4.2 Hookshot (WordPress/6.7.1)"})
    assert response.status_code == 200
    assert nothing_stored(runtime)


def test_a_delivery_signed_with_the_documented_vector_is_stored(client, runtime, path):
    headers = {**woocommerce_headers(SECRET, CUSTOMER, "customer.created"),
               "X-WC-Webhook-Signature": VECTORS["customer.created.min.json"]}
    assert client.post(path, data=CUSTOMER, headers=headers).json == {"accepted": 1, "duplicates": 0}


def test_a_replay_with_a_new_delivery_id_is_deduplicated(client, runtime, path):
    first = woocommerce_headers(SECRET, ORDER, "order.created", delivery_id="a" * 32)
    replay = woocommerce_headers(SECRET, ORDER, "order.created", delivery_id="b" * 32)
    assert client.post(path, data=ORDER, headers=first).status_code == 200
    response = client.post(path, data=ORDER, headers=replay)
    assert response.status_code == 200 and response.json == {"accepted": 0, "duplicates": 1}
    assert count(runtime) == 1


def test_a_later_modification_of_the_same_order_is_a_new_event(client, runtime, path):
    order = json.loads(ORDER)
    order.update(status="completed", date_modified_gmt="2026-11-25T18:30:00")
    later = json.dumps(order).encode()
    for body, topic in ((ORDER, "order.created"), (later, "order.updated"), (later, "order.updated")):
        assert client.post(path, data=body, headers=woocommerce_headers(SECRET, body, topic)).status_code == 200
    assert [row.kind for row in rows(runtime)] == ["order.created", "order.updated"]


@pytest.mark.parametrize("case, reason", [
    ("forged", "bad_signature"), ("wrong_secret", "bad_signature"), ("missing", "missing_signature"),
    ("signed_ping", "bad_signature"),
])
def test_refused_requests_answer_401_and_leave_no_row(client, runtime, path, case, reason):
    body, headers = CUSTOMER, woocommerce_headers(SECRET, CUSTOMER, "customer.created")
    if case == "forged":
        body = CUSTOMER.replace(b"jane.doe@example.com", b"eve@example.com")
    elif case == "wrong_secret":
        headers = woocommerce_headers("not-the-secret", CUSTOMER, "customer.created")
    elif case == "missing":
        del headers["X-WC-Webhook-Signature"]
    elif case == "signed_ping":      # a ping-shaped body with a (wrong) signature is a delivery, and is checked
        body = PING
    response = client.post(path, data=body, headers=headers)
    assert response.status_code == 401 and response.json["error"] == reason
    assert nothing_stored(runtime)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def guest(order: bytes) -> bytes:
    document = json.loads(order)
    document["customer_id"] = 0
    return json.dumps(document).encode()


JANE = {"email": "jane.doe@example.com", "first_name": "Jane", "last_name": "Doe", "phone": "(415) 555-0100",
        "company": "Acme Widgets", "country": "US", "state": "CA", "city": "San Francisco"}
STORE_CUSTOMER = {"system": "shop", "external_id": "woocommerce:shop.example.com:25", "object_type": "customer"}
PURCHASE = {"kind": "purchase", "occurred_at": utc("2026-11-25T18:05:00"), "properties": {
    "source": "woocommerce", "shop": "shop.example.com", "order_id": "727", "order_number": "727",
    "total": "29.35", "currency": "USD", "status": "processing", "items": 3}}
HANDLED = [
    ("customer.created", CUSTOMER, [change(**STORE_CUSTOMER, fields=JANE, changed_at=utc("2026-11-25T18:04:11"))]),
    ("customer.updated", CUSTOMER, [change(**STORE_CUSTOMER, fields=JANE, changed_at=utc("2026-11-25T18:04:11"))]),
    ("order.created", ORDER, [change(**STORE_CUSTOMER, fields=JANE, changed_at=utc("2026-11-25T18:05:02"),
                                     activity=PURCHASE)]),
    # order.updated fires several times per checkout: contact details only, the purchase counted once
    ("order.updated", ORDER, [change(**STORE_CUSTOMER, fields=JANE, changed_at=utc("2026-11-25T18:05:02"))]),
    # a guest checkout (customer_id 0) has no store identity; the email resolves the person
    ("order.created", guest(ORDER), [change(system="shop", object_type="customer", fields=JANE,
                                            changed_at=utc("2026-11-25T18:05:02"), activity=PURCHASE)]),
]


@pytest.mark.parametrize("topic, body, expected", HANDLED,
                         ids=["customer.created", "customer.updated", "order.created", "order.updated", "guest"])
def test_handlers_turn_stored_deliveries_into_changes(client, runtime, path, topic, body, expected):
    assert client.post(path, data=body, headers=woocommerce_headers(SECRET, body, topic)).status_code == 200
    assert [c for row in rows(runtime) for c in handled(woocommerce, row)] == expected


def test_php_escaped_slashes_are_verified_on_the_raw_bytes(client, runtime, path):
    body = json.dumps(json.loads(CUSTOMER), separators=(",", ":")).replace("/", "\\/").encode()   # wp_json_encode
    assert b"https:\\/\\/" in body
    assert client.post(path, data=body, headers=woocommerce_headers(SECRET, body, "customer.created")).status_code == 200
    assert rows(runtime)[0].payload["resource"]["_links"]["self"][0]["href"] == "https://shop.example.com/wp-json/wc/v3/customers/25"


def test_topics_without_a_handler_are_stored_for_processing_to_report(client, runtime, path):
    body = b'{"action":"woocommerce_add_to_cart","arg":"c4ca4238a0b923820dcc509a6f75849b"}'
    headers = woocommerce_headers(SECRET, body, "action.woocommerce_add_to_cart")
    assert client.post(path, data=body, headers=headers).status_code == 200
    assert [(row.kind, row.status) for row in rows(runtime)] == [("action.woocommerce_add_to_cart", "pending")]
    assert "action.woocommerce_add_to_cart" not in woocommerce.HANDLERS
