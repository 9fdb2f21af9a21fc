"""Webflow: the documented vector (hex HMAC of `timestamp:body`, ms), the 5-minute window, label mapping."""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest
from flask import Flask

from hub.exceptions import SignatureError
from tests.conftest import fixture_bytes, fixture_json
from tests.receiver_helpers import add_source, change, count, handled, nothing_stored, rows
from hub.sandbox.signing import webflow_headers
from webhooks import webflow

VECTOR = fixture_json("webflow/signature.json")["worked_example"]
SECRET = VECTOR["secret"]
STAMP = VECTOR["x-webflow-timestamp"]
BODY = fixture_bytes("webflow/form_submission__contact-us.json")   # the exact bytes the vector signs


@pytest.fixture
def path(runtime, workspace):
    return add_source(runtime, workspace, "webflow", SECRET)


def test_documented_vector():
    assert webflow.signature(SECRET, STAMP, BODY) == VECTOR["expected_x-webflow-signature"]
    assert webflow_headers(SECRET, BODY, int(STAMP))["x-webflow-signature"] == VECTOR["expected_x-webflow-signature"]


def test_documented_vector_verifies_at_its_own_time_and_is_stale_five_minutes_later():
    headers = {"x-webflow-timestamp": STAMP, "x-webflow-signature": VECTOR["expected_x-webflow-signature"]}
    with Flask(__name__).test_request_context("/", method="POST", data=BODY, headers=headers) as ctx:
        webflow.verify(ctx.request, SECRET, now=int(STAMP) / 1000 + 299)
        with pytest.raises(SignatureError) as refused:
            webflow.verify(ctx.request, SECRET, now=int(STAMP) / 1000 + 301)
    assert refused.value.reason == "stale_timestamp"


def test_signed_submission_is_stored_and_a_replay_within_the_window_is_deduplicated(client, runtime, path):
    headers = webflow_headers(SECRET, BODY)
    assert client.post(path, data=BODY, headers=headers).json == {"accepted": 1, "duplicates": 0}
    assert client.post(path, data=BODY, headers=headers).json == {"accepted": 0, "duplicates": 1}
    assert count(runtime) == 1


@pytest.mark.parametrize("case, reason", [
    ("forged", "bad_signature"), ("wrong_secret", "bad_signature"), ("stale", "stale_timestamp"),
    ("documented_capture_replayed", "stale_timestamp"), ("future", "stale_timestamp"),
    ("seconds_not_ms", "stale_timestamp"), ("missing", "missing_signature"), ("base64", "bad_signature"),
])
def test_refused_requests_answer_401_and_leave_no_row(client, runtime, path, case, reason):
    body, headers = BODY, webflow_headers(SECRET, BODY)
    if case == "forged":
        body = BODY.replace(b"Zaphod", b"Arthur")
    elif case == "wrong_secret":
        headers = webflow_headers("not-the-secret", BODY)
    elif case == "stale":
        headers = webflow_headers(SECRET, BODY, int((time.time() - 301) * 1000))
    elif case == "documented_capture_replayed":
        headers = {"x-webflow-timestamp": STAMP, "x-webflow-signature": VECTOR["expected_x-webflow-signature"]}
    elif case == "future":
        headers = webflow_headers(SECRET, BODY, int((time.time() + 600) * 1000))
    elif case == "seconds_not_ms":
        headers = webflow_headers(SECRET, BODY, int(time.time()))
    elif case == "missing":
        headers = {"x-webflow-timestamp": headers["x-webflow-timestamp"]}
    elif case == "base64":
        import base64
        headers["x-webflow-signature"] = base64.b64encode(bytes.fromhex(headers["x-webflow-signature"])).decode()
    response = client.post(path, data=body, headers=headers)
    assert response.status_code == 401 and response.json["error"] == reason
    assert nothing_stored(runtime)


def test_signed_but_malformed_body_is_400_and_kept_for_inspection(client, runtime, path):
    body = json.dumps({"triggerType": "form_submission"}).encode()
    response = client.post(path, data=body, headers=webflow_headers(SECRET, body))
    assert response.status_code == 400 and response.json["error"] == "malformed_payload"
    assert [row.status for row in rows(runtime)] == ["malformed"]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def submission(name: str, data: dict, submission_id: str) -> bytes:
    document = json.loads(BODY)
    document["payload"].update(name=name, data=data, id=submission_id)
    return json.dumps(document).encode()


FORM = {"form_id": "65429eadebe8a9f3a30f62d0", "site_id": "65427cf400e02b306eaa049c", "source": "webflow"}
AT = utc("2026-11-25T18:03:10.117")
HANDLED = [
    # the documented sample: labels "First Name"/"Last Name"/"email", a phone sent as a JSON number
    (BODY, [change(system="form", changed_at=AT,
                   fields={"first_name": "Zaphod", "last_name": "Beeblebrox", "email": "zaphod@heartofgold.ai",
                           "phone": "15550000000"},
                   activity={"kind": "form_submit", "occurred_at": AT,
                             "properties": {"form": "Contact Us", "submission_id": "6321ca84df3949bfc6752327", **FORM}})]),
    # a designer's labels: "Name" split, "Work Email", "Company Name", "Job Title", a checkbox, an unknown label
    (submission("Request a Demo", {"Name": "Trillian Astra", "Work Email": "trillian@heartofgold.ai",
                                   "Company Name": "Heart of Gold", "Job Title": "Navigator", "COUNTRY": "GB",
                                   "Employees": 12, "Newsletter": "true", "How did you hear about us?": "Guide",
                                   "Phone": ""}, "6321ca84df3949bfc6752328"),
     [change(system="form", changed_at=AT, consent={"email": True},
             fields={"first_name": "Trillian", "last_name": "Astra", "email": "trillian@heartofgold.ai",
                     "company": "Heart of Gold", "title": "Navigator", "country": "GB", "company_size": 12},
             custom={"how_did_you_hear_about_us": "Guide"},
             activity={"kind": "demo_request", "occurred_at": AT,
                       "properties": {"form": "Request a Demo", "submission_id": "6321ca84df3949bfc6752328", **FORM}})]),
]


@pytest.mark.parametrize("body, expected", HANDLED, ids=["documented_sample", "designer_labels"])
def test_handlers_turn_stored_submissions_into_changes(client, runtime, path, body, expected):
    assert client.post(path, data=body, headers=webflow_headers(SECRET, body)).status_code == 200
    assert [c for row in rows(runtime) for c in handled(webflow, row)] == expected


def test_other_trigger_types_are_stored_for_processing_to_report(client, runtime, path):
    body = json.dumps({"triggerType": "site_publish", "payload": {"site": "65427cf400e02b306eaa049c",
                                                                 "publishedOn": "2026-11-25T18:30:00.000Z"}}).encode()
    assert client.post(path, data=body, headers=webflow_headers(SECRET, body)).status_code == 200
    assert client.post(path, data=body, headers=webflow_headers(SECRET, body)).json["duplicates"] == 1
    assert [(row.kind, row.status) for row in rows(runtime)] == [("site_publish", "pending")]
    assert "site_publish" not in webflow.HANDLERS
