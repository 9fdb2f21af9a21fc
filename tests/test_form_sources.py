"""Generic sources (Standard Webhooks) and plain HTML forms: signatures, windows, honeypot, 303s, handlers."""
from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from flask import Flask

from hub.exceptions import SignatureError
from tests.conftest import fixture_bytes, fixture_json
from tests.receiver_helpers import add_source, change, count, handled, nothing_stored, rows
from hub.sandbox.signing import standard_webhook_headers
from webhooks import html_form, standard

VECTOR = fixture_json("standard-webhooks/test-vectors.json")["vectors"][0]
SECRET = VECTOR["secret"]
DEMO = fixture_bytes("standard-webhooks/form.submitted__demo-request.json")


@pytest.fixture
def generic_path(runtime, workspace):
    return add_source(runtime, workspace, "generic", SECRET)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


# --- Standard Webhooks: the spec's own vector ------------------------------------------------------

def vector_request():
    headers = {"webhook-id": VECTOR["webhook-id"], "webhook-timestamp": VECTOR["webhook-timestamp"],
               "webhook-signature": VECTOR["expected_signature_header"]}
    return Flask(__name__).test_request_context("/", method="POST", data=VECTOR["payload"].encode(), headers=headers)


def test_spec_test_vector():
    got = standard.signature(SECRET, VECTOR["webhook-id"], VECTOR["webhook-timestamp"], VECTOR["payload"].encode())
    assert got == VECTOR["expected_signature_header"]
    headers = standard_webhook_headers(SECRET, VECTOR["webhook-id"], VECTOR["payload"].encode(),
                                       int(VECTOR["webhook-timestamp"]))
    assert headers["webhook-signature"] == VECTOR["expected_signature_header"]


def test_spec_vector_verifies_at_its_own_time_and_is_stale_after_five_minutes():
    stamp = int(VECTOR["webhook-timestamp"])
    with vector_request() as ctx:
        standard.verify(ctx.request, SECRET, now=stamp + 299)
        with pytest.raises(SignatureError) as refused:
            standard.verify(ctx.request, SECRET, now=stamp + 301)
    assert refused.value.reason == "stale_timestamp"


@pytest.mark.parametrize("secret", ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])
def test_the_whsec_prefix_is_optional_and_the_key_is_the_decoded_secret(secret):
    stamp = int(VECTOR["webhook-timestamp"])
    with vector_request() as ctx:
        standard.verify(ctx.request, secret, now=stamp)


def test_unpadded_secrets_are_accepted_like_the_reference_libraries():
    assert len(standard.secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS")) == 23
    assert len(standard.secret_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwBr")) == 25


def test_the_secret_text_itself_is_not_the_key():
    import base64
    import hashlib
    import hmac

    signed = f"{VECTOR['webhook-id']}.{VECTOR['webhook-timestamp']}.{VECTOR['payload']}".encode()
    text_keyed = "v1," + base64.b64encode(hmac.new(SECRET.encode(), signed, hashlib.sha256).digest()).decode()
    headers = {"webhook-id": VECTOR["webhook-id"], "webhook-timestamp": VECTOR["webhook-timestamp"],
               "webhook-signature": text_keyed}
    with Flask(__name__).test_request_context("/", method="POST", data=VECTOR["payload"].encode(),
                                              headers=headers) as ctx, pytest.raises(SignatureError):
        standard.verify(ctx.request, SECRET, now=int(VECTOR["webhook-timestamp"]))


# --- Standard Webhooks: the receiver ----------------------------------------------------------------

def test_signed_submission_is_stored_and_a_replay_of_the_same_message_is_deduplicated(client, runtime, generic_path):
    headers = standard_webhook_headers(SECRET, "msg_1", DEMO)
    assert client.post(generic_path, data=DEMO, headers=headers).json == {"accepted": 1, "duplicates": 0}
    retry = standard_webhook_headers(SECRET, "msg_1", DEMO, int(time.time()) + 5)   # a retry re-signs with a new time
    assert client.post(generic_path, data=DEMO, headers=retry).json == {"accepted": 0, "duplicates": 1}
    assert count(runtime) == 1


def test_one_of_several_signatures_may_match_key_rotation(client, runtime, generic_path):
    headers = standard_webhook_headers(SECRET, "msg_2", DEMO)
    other = standard_webhook_headers("whsec_" + "A" * 32, "msg_2", DEMO, int(headers["webhook-timestamp"]))
    headers["webhook-signature"] = f"v1a,AAAA {other['webhook-signature']} {headers['webhook-signature']}"
    assert client.post(generic_path, data=DEMO, headers=headers).status_code == 200


def test_the_same_message_id_at_two_sources_is_two_events(client, runtime, workspace, generic_path):
    second = add_source(runtime, workspace, "generic", SECRET)
    for path in (generic_path, second):
        assert client.post(path, data=DEMO, headers=standard_webhook_headers(SECRET, "msg_3", DEMO)).status_code == 200
    assert count(runtime) == 2


@pytest.mark.parametrize("case, reason", [
    ("forged", "bad_signature"), ("wrong_secret", "bad_signature"), ("stale", "stale_timestamp"),
    ("future", "stale_timestamp"), ("spec_vector_replayed", "stale_timestamp"), ("ms_not_seconds", "stale_timestamp"),
    ("only_v1a", "bad_signature"), ("other_message_id", "bad_signature"), ("missing", "missing_signature"),
])
def test_refused_requests_answer_401_and_leave_no_row(client, runtime, generic_path, case, reason):
    body, headers = DEMO, standard_webhook_headers(SECRET, "msg_9", DEMO)
    if case == "forged":
        body = DEMO.replace(b"grace@example.org", b"eve@example.org")
    elif case == "wrong_secret":
        headers = standard_webhook_headers("whsec_" + "B" * 32, "msg_9", DEMO)
    elif case == "stale":
        headers = standard_webhook_headers(SECRET, "msg_9", DEMO, int(time.time()) - 301)
    elif case == "future":
        headers = standard_webhook_headers(SECRET, "msg_9", DEMO, int(time.time()) + 330)   # past the 300 s tolerance even a few seconds later
    elif case == "spec_vector_replayed":
        body = VECTOR["payload"].encode()
        headers = {"webhook-id": VECTOR["webhook-id"], "webhook-timestamp": VECTOR["webhook-timestamp"],
                   "webhook-signature": VECTOR["expected_signature_header"]}
    elif case == "ms_not_seconds":
        headers = standard_webhook_headers(SECRET, "msg_9", DEMO, int(time.time() * 1000))
    elif case == "only_v1a":
        headers["webhook-signature"] = "v1a," + headers["webhook-signature"].split(",", 1)[1]
    elif case == "other_message_id":
        headers["webhook-id"] = "msg_10"
    elif case == "missing":
        del headers["webhook-signature"]
    response = client.post(generic_path, data=body, headers=headers)
    assert response.status_code == 401 and response.json["error"] == reason
    assert nothing_stored(runtime)


def test_signed_but_malformed_body_is_400_and_kept_for_inspection(client, runtime, generic_path):
    body = b'{"type": "form.submitted", "data": "not an object"}'
    response = client.post(generic_path, data=body, headers=standard_webhook_headers(SECRET, "msg_bad", body))
    assert response.status_code == 400 and response.json["error"] == "malformed_payload"
    assert [row.status for row in rows(runtime)] == ["malformed"]


def test_generic_submission_handler(client, runtime, generic_path):
    assert client.post(generic_path, data=DEMO, headers=standard_webhook_headers(SECRET, "msg_4", DEMO)).status_code == 200
    assert handled(standard, rows(runtime)[0]) == [change(
        system="form", changed_at=utc("2026-11-25T18:20:05"), consent={"email": True, "sms": False},
        fields={"email": "grace@example.org", "first_name": "Grace", "last_name": "Hopper", "phone": "+1 202 555 0147",
                "company": "Compilers Inc", "company_size": "51-200", "title": "Rear Admiral", "country": "US"},
        custom={"use_case": "lead routing", "budget": 5000},
        activity={"kind": "demo_request", "occurred_at": utc("2026-11-25T18:20:05"),
                  "properties": {"form": "demo-request", "source": "generic"}})]


# --- plain HTML forms --------------------------------------------------------------------------------

THANKS = "https://www.example.com/thanks"
FORM = {"form": "newsletter", "email": "linus@example.com", "name": "Linus Pauling", "company": "Caltech",
        "consent_email": "on", "favourite_topic": "chemistry", "website_url": ""}


@pytest.fixture
def html_path(runtime, workspace):
    return add_source(runtime, workspace, "html", None, {"thank_you_url": THANKS})


def away_from_a_minute_boundary() -> None:
    """Two posts meant to share a minute bucket must not straddle one."""
    if time.time() % 60 > 58:
        time.sleep(61 - time.time() % 60)


def test_a_form_post_is_stored_and_answered_with_303_to_the_thank_you_url(client, runtime, html_path):
    response = client.post(html_path, data=FORM)
    assert response.status_code == 303 and response.headers["Location"] == THANKS
    assert count(runtime) == 1


def test_without_a_thank_you_url_the_built_in_page_is_used(client, runtime, workspace):
    path = add_source(runtime, workspace, "html", None)
    response = client.post(path, data=FORM)
    assert response.status_code == 303 and response.headers["Location"] == "/webhooks/forms/thanks"
    page = client.get(response.headers["Location"])
    assert page.status_code == 200 and b"Thank you" in page.data


def test_a_filled_honeypot_gets_the_same_303_and_stores_nothing(client, runtime, html_path):
    response = client.post(html_path, data={**FORM, "website_url": "http://spam.example"})
    assert response.status_code == 303 and response.headers["Location"] == THANKS
    assert nothing_stored(runtime)


def test_a_double_submit_within_the_minute_is_stored_once(client, runtime, html_path):
    away_from_a_minute_boundary()
    assert client.post(html_path, data=FORM).status_code == 303
    assert client.post(html_path, data=FORM).status_code == 303
    assert count(runtime) == 1


def test_the_dedupe_key_folds_resubmits_in_one_minute_only():
    pairs = list(FORM.items())
    now = datetime(2026, 11, 25, 18, 20, 5, tzinfo=timezone.utc)
    key = html_form.dedupe_key("scope", pairs, now)
    assert html_form.dedupe_key("scope", list(reversed(pairs)), now + timedelta(seconds=50)) == key
    assert html_form.dedupe_key("scope", pairs, now + timedelta(seconds=60)) != key
    assert html_form.dedupe_key("other", pairs, now) != key
    assert html_form.dedupe_key("scope", pairs + [("extra", "1")], now) != key


@pytest.mark.parametrize("post, reason", [
    ({"data": json.dumps(FORM), "content_type": "application/json"}, "unsupported_content_type"),
    ({"data": {"form": "newsletter", "email": "", "website_url": ""}}, "empty_form"),
])
def test_unusable_posts_are_400_with_a_reason(client, runtime, html_path, post, reason):
    response = client.post(html_path, **post)
    assert response.status_code == 400 and response.json["error"] == reason


def test_unknown_source_key_is_404(client, runtime, html_path):
    assert client.post("/webhooks/forms/nope", data=FORM).status_code == 404 and nothing_stored(runtime)


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "multipart/form-data"])
def test_html_form_handler(client, runtime, html_path, content_type):
    assert client.post(html_path, data=FORM, content_type=content_type).status_code == 303
    row = rows(runtime)[0]
    at = datetime.fromisoformat(row.payload["timestamp"])
    assert handled(html_form, row) == [change(
        system="form", changed_at=at, consent={"email": True},
        fields={"email": "linus@example.com", "company": "Caltech", "first_name": "Linus", "last_name": "Pauling"},
        custom={"favourite_topic": "chemistry"},
        activity={"kind": "form_submit", "occurred_at": at, "properties": {"form": "newsletter", "source": "html"}})]


@pytest.mark.parametrize("kind", ["generic", "html"])
def test_bodies_over_one_megabyte_are_413_and_not_stored(client, runtime, workspace, kind):
    path = add_source(runtime, workspace, kind, SECRET if kind == "generic" else None)
    body = b"email=a%40example.com&notes=" + b"x" * (1024 * 1024)
    headers = standard_webhook_headers(SECRET, "msg_big", body) if kind == "generic" else {}
    response = client.post(path, data=body, headers={**headers, "Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413 and response.json["error"] == "body_too_large"
    assert nothing_stored(runtime)
