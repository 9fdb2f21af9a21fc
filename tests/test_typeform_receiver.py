"""Typeform: the documented signature vector, refusals with no row, dedupe of replays, answer mapping."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tests.conftest import fixture_bytes, fixture_json
from tests.receiver_helpers import add_source, change, count, handled, nothing_stored, rows
from hub.sandbox.signing import typeform_headers
from webhooks import typeform

VECTOR = fixture_json("typeform/signature.json")["worked_example"]
SECRET = VECTOR["secret"]
DEMO = fixture_bytes("typeform/form_response__book-a-demo.json")   # the exact bytes the vector signs


@pytest.fixture
def path(runtime, workspace):
    return add_source(runtime, workspace, "typeform", SECRET)


def test_documented_vector():
    assert typeform.signature(SECRET, DEMO) == VECTOR["expected_Typeform-Signature"]
    assert typeform_headers(SECRET, DEMO)["Typeform-Signature"] == VECTOR["expected_Typeform-Signature"]


def test_signed_response_is_stored(client, runtime, path):
    response = client.post(path, data=DEMO, headers={"Typeform-Signature": VECTOR["expected_Typeform-Signature"],
                                                     "Content-Type": "application/json"})
    assert response.status_code == 200 and response.json == {"accepted": 1, "duplicates": 0}
    assert count(runtime) == 1


def test_a_replay_is_deduplicated_2xx_and_no_new_row(client, runtime, path):
    assert client.post(path, data=DEMO, headers=typeform_headers(SECRET, DEMO)).status_code == 200
    replay = client.post(path, data=DEMO, headers=typeform_headers(SECRET, DEMO))
    assert replay.status_code == 200 and replay.json == {"accepted": 0, "duplicates": 1}
    assert count(runtime) == 1


@pytest.mark.parametrize("case, reason", [
    ("forged", "bad_signature"), ("wrong_secret", "bad_signature"), ("missing", "missing_signature"),
    ("hex_encoding", "bad_signature"), ("no_prefix", "bad_signature"),
])
def test_refused_requests_answer_401_and_leave_no_row(client, runtime, path, case, reason):
    headers = typeform_headers(SECRET, DEMO)
    body = DEMO
    if case == "forged":
        body = DEMO.replace(b"jane.doe@example.com", b"mallory@example.com")
    elif case == "wrong_secret":
        headers = typeform_headers("not-the-secret", DEMO)
    elif case == "missing":
        headers = {"Content-Type": "application/json"}
    elif case == "hex_encoding":
        import hashlib
        import hmac
        headers["Typeform-Signature"] = "sha256=" + hmac.new(SECRET.encode(), DEMO, hashlib.sha256).hexdigest()
    elif case == "no_prefix":
        headers["Typeform-Signature"] = headers["Typeform-Signature"].removeprefix("sha256=")
    response = client.post(path, data=body, headers=headers)
    assert response.status_code == 401 and response.json["error"] == reason
    assert nothing_stored(runtime)


def test_signed_but_malformed_body_is_400_and_kept_for_inspection(client, runtime, path):
    body = b'{"event_type": "form_response", "form_response": '
    response = client.post(path, data=body, headers=typeform_headers(SECRET, body))
    assert response.status_code == 400 and response.json["error"] == "malformed_json"
    assert [(row.kind, row.status) for row in rows(runtime)] == [("malformed", "malformed")]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


HANDLED = [
    ("form_response__book-a-demo.json", [change(
        system="form", changed_at=utc("2026-11-25T18:03:10"), consent={"email": True},
        fields={"first_name": "Jane", "last_name": "Doe", "email": "jane.doe@example.com", "phone": "+14155550100",
                "company_size": "200+"},
        custom={"utm_source": "newsletter"},
        activity={"kind": "demo_request", "occurred_at": utc("2026-11-25T18:03:10"),
                  "properties": {"form": "Book a demo", "form_id": "lT4Z3j", "source": "typeform",
                                 "response_token": "a3a12ec67a1365927098a606107fac15"}})]),
    # email found by its question type (auto ref), "full_name" split, unknown refs and hidden fields to custom.
    ("form_response__contact-sales.json", [change(
        system="form", changed_at=utc("2026-11-25T19:01:45"), consent={"email": False},
        fields={"company": "Analytical Engines Ltd", "title": "CTO", "country": "United Kingdom",
                "email": "ada@example.co.uk", "first_name": "Ada", "last_name": "Lovelace"},
        custom={"interests": ["Scoring", "Routing"], "8d1c0a52_3c1f_4b7e_9a56_0f1e2d3c4b5a": "Call after 3pm",
                "utm_campaign": "winter"},
        activity={"kind": "form_submit", "occurred_at": utc("2026-11-25T19:01:45"),
                  "properties": {"form": "Contact sales", "form_id": "Zx8Yw7", "source": "typeform",
                                 "response_token": "c0ffee0123456789abcdef0123456789"}})]),
]


@pytest.mark.parametrize("name, expected", HANDLED, ids=[case[0] for case in HANDLED])
def test_handlers_turn_stored_responses_into_changes(client, runtime, path, name, expected):
    body = fixture_bytes(f"typeform/{name}")
    assert client.post(path, data=body, headers=typeform_headers(SECRET, body)).status_code == 200
    assert [c for row in rows(runtime) for c in handled(typeform, row)] == expected
