"""HubSpot app webhooks: documented signature vectors, refusals that leave no row, dedupe, routing."""
from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import func, select

from hub.db import transaction
from hub.models import Event, Outbox
from tests.conftest import HUBSPOT_APP_SECRET, fixture_bytes, fixture_json
from hub.sandbox.signing import hubspot_v1_headers, hubspot_v2_headers, hubspot_v3_headers
from webhooks import hubspot

URL = "http://localhost/webhooks/hubspot"
VECTORS = fixture_json("hubspot/signature-v3.json")


def count(runtime, model) -> int:
    with transaction(runtime.engine) as session:
        return session.scalar(select(func.count()).select_from(model))


def post(client, body: bytes, headers: dict, path: str = "/webhooks/hubspot"):
    return client.post(path, data=body, headers=headers)


# --- the vendor's own vectors --------------------------------------------------------------------

def test_v3_worked_example_matches_documented_signature():
    ex = VECTORS["worked_example"]
    got = hubspot.v3_signature(ex["client_secret"], ex["method"], ex["uri"], ex["body"].encode(),
                               ex["X-HubSpot-Request-Timestamp"])
    assert got == ex["expected_X-HubSpot-Signature-v3"]
    assert hubspot.v3_signature(ex["client_secret"], ex["method"], "https://hooks.example.com/webhooks/hubspot",
                                ex["body"].encode(), ex["X-HubSpot-Request-Timestamp"]) == \
        ex["negative_cases"]["uri_without_query_string_gives"]


def test_v1_and_v2_documented_vectors():
    v1 = VECTORS["doc_published_legacy_vectors"]["v1"]
    assert hubspot.v1_signature(v1["secret"], v1["body"].encode()) == v1["expected"]
    v2 = VECTORS["doc_published_legacy_vectors"]["v2_GET"]
    assert hubspot.v2_signature(v2["secret"], v2["method"], v2["uri"], v2["body"].encode()) == v2["expected"]
    ex = VECTORS["worked_example"]
    legacy = ex["same_request_legacy_signatures"]
    assert hubspot.v1_signature(ex["client_secret"], ex["body"].encode()) == legacy["v1_hex"]
    assert hubspot.v2_signature(ex["client_secret"], "POST", ex["uri"], ex["body"].encode()) == legacy["v2_hex"]


def test_v3_uri_percent_escapes_are_decoded_before_hashing():
    ex = VECTORS["worked_example"]
    uri = ex["uri"].replace("src=app", "src=app%3Aprod")
    assert hubspot.v3_signature(ex["client_secret"], "POST", hubspot.decode_uri(uri), ex["body"].encode(),
                                ex["X-HubSpot-Request-Timestamp"]) == \
        ex["negative_cases"]["uri_with_%3A_decoded_to_colon_gives (correct per docs when HubSpot called ...src=app%3Aprod)"]


@pytest.mark.parametrize("body", [
    b'[{"portalId":62515,"subscriptionType":"contact.creation","objectId":1180591620717411303425}]',  # > 64 bits
    b'[{"portalId":62515,"subscriptionType":"contact.creation","objectId":9223372036854775807}]',    # 64 bits
    b'[{"portalId":62515,"subscriptionType":"contact.creation","objectId":101,"score":NaN}]',
    b'[{"portalId":62515,"subscriptionType":"contact.creation","objectId":101,"n":"\\ud800"}]',    # lone surrogate
    "[{\"portalId\":62515,\"subscriptionType\":\"contact.creation\",\"objectId\":7}]".encode("utf-16"),
])
def test_parsed_payloads_are_what_the_standard_json_reader_reads(body):
    """The fast reader (orjson) must never change a value: wide integers stay exact integers, and what
    it refuses (NaN, lone surrogates, UTF-16) is read as before."""
    events = hubspot.parse(body)
    expected = json.loads(body)[0]
    assert repr(events[0].payload) == repr(expected)
    assert events[0].dedupe_key == f"hubspot:62515::::{expected['objectId']}"


# --- the receiver ---------------------------------------------------------------------------------

def test_signed_v3_batch_is_stored_with_one_outbox_row(client, runtime, hubspot_connection):
    body = fixture_bytes("hubspot/mixed-batch.json")
    response = post(client, body, hubspot_v3_headers(HUBSPOT_APP_SECRET, "POST", URL, body))
    assert response.status_code == 200, response.json
    assert response.json == {"accepted": 3, "duplicates": 0}
    assert count(runtime, Event) == 3      # two events share eventId 1946138022 and both are kept
    assert count(runtime, Outbox) == 1


def test_redelivery_with_new_attempt_number_changes_nothing(client, runtime, hubspot_connection):
    items = fixture_json("hubspot/contact.propertyChange__sample.json")
    body = json.dumps(items).encode()
    assert post(client, body, hubspot_v3_headers(HUBSPOT_APP_SECRET, "POST", URL, body)).status_code == 200
    for item in items:
        item["attemptNumber"] += 1
    retry = json.dumps(items).encode()
    response = post(client, retry, hubspot_v3_headers(HUBSPOT_APP_SECRET, "POST", URL, retry))
    assert response.status_code == 200
    assert response.json == {"accepted": 0, "duplicates": 3}
    assert count(runtime, Event) == 3 and count(runtime, Outbox) == 1


@pytest.mark.parametrize("case", ["forged", "stale", "wrong_secret", "missing", "v3_bad_with_good_v1"])
def test_refused_requests_answer_401_and_leave_no_row(client, runtime, hubspot_connection, case):
    body = fixture_bytes("hubspot/contact.creation__sample.json")
    headers = hubspot_v3_headers(HUBSPOT_APP_SECRET, "POST", URL, body)
    if case == "forged":
        body = body.replace(b"1246965", b"9999999")
    elif case == "stale":
        headers = hubspot_v3_headers(HUBSPOT_APP_SECRET, "POST", URL, body,
                                     timestamp_ms=int((time.time() - 301) * 1000))
    elif case == "wrong_secret":
        headers = hubspot_v3_headers("not-the-secret", "POST", URL, body)
    elif case == "missing":
        headers = {"Content-Type": "application/json"}
    elif case == "v3_bad_with_good_v1":
        headers = {**hubspot_v1_headers(HUBSPOT_APP_SECRET, body),
                   **hubspot_v3_headers(HUBSPOT_APP_SECRET, "POST", URL, body,
                                        timestamp_ms=int((time.time() - 600) * 1000))}
    response = post(client, body, headers)
    assert response.status_code == 401
    assert response.json["error"] in {"bad_signature", "stale_timestamp", "missing_signature"}
    assert count(runtime, Event) == 0 and count(runtime, Outbox) == 0


def test_replayed_capture_after_five_minutes_is_refused(client, runtime, hubspot_connection):
    body = fixture_bytes("hubspot/contact.creation__sample.json")
    captured = hubspot_v3_headers(HUBSPOT_APP_SECRET, "POST", URL, body, timestamp_ms=int((time.time() - 400) * 1000))
    response = post(client, body, captured)
    assert response.status_code == 401 and response.json["error"] == "stale_timestamp"
    assert count(runtime, Event) == 0


def test_legacy_v1_and_v2_are_accepted_and_a_v1_replay_is_deduplicated(client, runtime, hubspot_connection):
    body = fixture_bytes("hubspot/contact.creation__sample.json")
    assert post(client, body, hubspot_v1_headers(HUBSPOT_APP_SECRET, body)).json == {"accepted": 2, "duplicates": 0}
    assert post(client, body, hubspot_v1_headers(HUBSPOT_APP_SECRET, body)).json == {"accepted": 0, "duplicates": 2}
    other = fixture_bytes("hubspot/contact.deletion__sample.json")
    assert post(client, other, hubspot_v2_headers(HUBSPOT_APP_SECRET, "POST", URL, other)).status_code == 200
    assert count(runtime, Event) == 3


def test_public_url_is_what_the_signature_covers(runtime, hubspot_connection):
    from hub.app import create_app

    client = create_app({"HUB_PUBLIC_URL": "https://hooks.example.com"}).test_client()
    body = fixture_bytes("hubspot/contact.creation__sample.json")
    public = "https://hooks.example.com/webhooks/hubspot?portal=62515&src=app"
    response = post(client, body, hubspot_v3_headers(HUBSPOT_APP_SECRET, "POST", public, body),
                    path="/webhooks/hubspot?portal=62515&src=app")
    assert response.status_code == 200, response.json


def test_unknown_portal_is_refused_without_a_row(client, runtime, hubspot_connection):
    items = fixture_json("hubspot/contact.creation__sample.json")
    items[0]["portalId"] = 111
    body = json.dumps(items).encode()
    response = post(client, body, hubspot_v3_headers(HUBSPOT_APP_SECRET, "POST", URL, body))
    assert response.status_code == 403 and response.json["error"] == "unknown_portal"
    assert count(runtime, Event) == 0


def test_malformed_and_oversized_bodies(client, runtime, hubspot_connection):
    body = b'{"not": "a batch"'
    response = post(client, body, hubspot_v3_headers(HUBSPOT_APP_SECRET, "POST", URL, body))
    assert response.status_code == 400 and response.json["error"] == "malformed_json"
    big = b"[" + b" " * (1024 * 1024) + b"]"
    response = post(client, big, hubspot_v3_headers(HUBSPOT_APP_SECRET, "POST", URL, big))
    assert response.status_code == 413 and response.json["error"] == "body_too_large"
    assert count(runtime, Event) == 0


def test_a_connection_stored_under_a_retired_key_does_not_block_other_portals(client, runtime, hubspot_connection):
    from cryptography.fernet import Fernet
    from sqlalchemy import insert

    from hub import admin
    from hub.models import Connection

    other = admin.create_workspace(runtime, "Old tenant")
    with transaction(runtime.engine) as session:
        session.execute(insert(Connection).values(
            id="f" * 32, workspace_id=other["workspace_id"], kind="hubspot", account_id="777",
            source_key="retired-key-connection", settings={},
            credentials=Fernet(Fernet.generate_key()).encrypt(b'{"app_secret": "x"}').decode()))
    body = fixture_bytes("hubspot/contact.creation__sample.json")
    response = post(client, body, hubspot_v3_headers(HUBSPOT_APP_SECRET, "POST", URL, body))
    assert response.status_code == 200, response.json
    assert count(runtime, Event) == 2


@pytest.mark.parametrize("base", ["http://localhost", "https://hub.example.com:8443", "http://[::1]:8000",
                                  "http://xn--bcher-kva.example"])
@pytest.mark.parametrize("path", ["/webhooks/hubspot", "/webhooks/hubspot?a=1&b=two", "/webhooks/hub%20spot?x=%41",
                                  "/webhooks/hubspot?q=a+b", "/webhooks/h%C3%BCb"])
def test_the_signed_url_without_hub_public_url_is_exactly_the_requests_own(app, base, path):
    """public_url's shortcut for plain URLs must give what request.url gives (the URL HubSpot signs)."""
    from flask import request

    from webhooks.routes import public_url

    with app.test_request_context(path, base_url=base, method="POST"):
        assert public_url() == request.url
