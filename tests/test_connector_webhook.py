"""Signed outbound webhooks: a receiver checks the Standard Webhooks signature with the spec's test-vector
secret; only the listed contact fields leave the hub; errors are classified; bad settings are refused."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time

import pytest
from click.testing import CliRunner
from marshmallow import ValidationError
from werkzeug import Response

from hub.cli import main as hub_cli
from hub.connectors.notice import Notice
from hub.connectors.webhook import WebhookNotice, message_id
from hub.db import transaction
from hub.exceptions import FatalError, RetriableError
from hub.models import Contact, LeadEffect
from hub.rules.effects import run_effects
from hub.rules.messages import configure_channel
from tests.conftest import fixture_json

VECTOR = fixture_json("standard-webhooks/test-vectors.json")["vectors"][0]
SECRET = VECTOR["secret"]
PATH = "/hooks/lead-hub"


def receiver_accepts(headers, body: bytes, secret: str = SECRET) -> bool:
    """What a receiver does per the spec: strip whsec_, base64-decode the key, HMAC id.timestamp.body."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    given = [item.split(",", 1)[1] for item in headers["webhook-signature"].split() if item.startswith("v1,")]
    fresh = abs(time.time() - int(headers["webhook-timestamp"])) <= 300
    return fresh and any(hmac.compare_digest(expected, g) for g in given)


def test_the_hub_signs_the_spec_test_vector_exactly():
    from webhooks.standard import signature

    assert signature(SECRET, VECTOR["webhook-id"], VECTOR["webhook-timestamp"],
                     VECTOR["payload"].encode()) == VECTOR["expected_signature_header"]


def channel(url: str, **settings) -> WebhookNotice:
    return WebhookNotice({"url": url, "secret": SECRET, "contact_fields": ["email", "first_name"], **settings})


NOTICE = Notice(subject="Hi", text="", idempotency_key="segment:c1:buyers:enter:1",
                event_type="contact.segment_entered",
                data={"contact_id": "c1", "segment": "buyers", "score": 55.0, "grade": "A",
                      "contact": {"email": "ana@acme.io", "first_name": "Ana", "phone": "+14155550100",
                                  "last_name": "Lopez"}})


def test_a_message_is_posted_signed_with_only_the_listed_contact_fields(httpserver):
    httpserver.expect_oneshot_request(PATH, method="POST").respond_with_data("", status=204)

    ident = channel(httpserver.url_for(PATH)).send(NOTICE)

    (request, _), = httpserver.log
    body = request.get_data()
    assert receiver_accepts(request.headers, body)
    assert not receiver_accepts(request.headers, body.replace(b"55.0", b"99.0"))
    assert request.headers["webhook-id"] == ident == message_id(NOTICE.idempotency_key)
    assert request.headers["content-type"] == "application/json"
    event = json.loads(body)
    assert event["type"] == "contact.segment_entered" and event["timestamp"].endswith("Z")
    assert event["data"] == {"contact_id": "c1", "segment": "buyers", "score": 55.0, "grade": "A",
                             "contact": {"email": "ana@acme.io", "first_name": "Ana"}}
    assert b"+14155550100" not in body and b"Lopez" not in body


def test_every_attempt_at_one_message_carries_the_same_webhook_id(httpserver):
    httpserver.expect_ordered_request(PATH).respond_with_data("busy", status=503, headers={"Retry-After": "7"})
    httpserver.expect_ordered_request(PATH).respond_with_data("ok")
    sender = channel(httpserver.url_for(PATH))

    with pytest.raises(RetriableError) as caught:
        sender.send(NOTICE)
    sender.send(NOTICE)

    assert (caught.value.status, caught.value.retry_after) == (503, 7.0)
    first, second = (request.headers["webhook-id"] for request, _ in httpserver.log)
    assert first == second


@pytest.mark.parametrize("status, error, code", [
    (429, RetriableError, None), (500, RetriableError, None), (502, RetriableError, None),
    (408, RetriableError, None), (400, FatalError, "HTTP_400"), (401, FatalError, "HTTP_401"),
    (404, FatalError, "HTTP_404"), (410, FatalError, "HTTP_410"),
    (301, FatalError, "HTTP_301"),           # a redirect is not followed: the URL needs fixing
])
def test_answers_are_classified(httpserver, status, error, code):
    httpserver.expect_request(PATH).respond_with_response(
        Response("no", status=status, headers={"Location": "https://elsewhere.example/"}))

    with pytest.raises(error) as caught:
        channel(httpserver.url_for(PATH)).send(NOTICE)

    assert caught.value.status == status
    assert getattr(caught.value, "code", None) == code
    assert len(httpserver.log) == 1


def test_a_slow_receiver_times_out_as_retriable(httpserver):
    release = threading.Event()

    def slow(request):
        release.wait(5)
        return Response("late")

    httpserver.expect_request(PATH).respond_with_handler(slow)

    started = time.monotonic()
    with pytest.raises(RetriableError, match="webhook unreachable: ReadTimeout"):
        channel(httpserver.url_for(PATH), timeout=0.2).send(NOTICE)
    assert time.monotonic() - started < 2.0
    release.set()
    deadline = time.monotonic() + 5          # let the receiver finish, so its answer is not logged in the next test
    while not httpserver.log and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.mark.parametrize("settings, field", [
    ({"secret": "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, "secret"),           # no whsec_ prefix
    ({"secret": "whsec_not base64!"}, "secret"),
    ({"secret": "whsec_c2hvcnQ="}, "secret"),                             # 5 bytes: too short
    ({"contact_fields": ["email", "password"]}, "contact_fields"),
    ({"url": "ftp://example.com/x"}, "url"),
])
def test_bad_settings_are_refused(settings, field):
    with pytest.raises(ValidationError) as caught:
        WebhookNotice({"url": "https://example.com/hook", "secret": SECRET, **settings})
    assert field in caught.value.messages


# --- as a message channel -----------------------------------------------------------------------

def webhook_message(runtime, ws: str, **contact_values) -> tuple[str, int]:
    """A contact and a pending `message` effect for it on the webhook channel: (contact id, effect id)."""
    with transaction(runtime.engine) as session:
        contact = Contact(workspace_id=ws, consent={}, custom={}, **contact_values)
        session.add(contact)
        session.flush()
        effect = LeadEffect(workspace_id=ws, contact_id=contact.id, kind="message", idempotency_key="k1",
                            params={"channel": "webhook", "segment": "buyers", "on": "enter"}, result={})
        session.add(effect)
        session.flush()
        return contact.id, effect.id


def test_a_message_effect_on_the_webhook_channel_posts_the_event(runtime, workspace, httpserver):
    ws = workspace["workspace_id"]
    configure_channel(runtime, ws, "webhook", {"url": httpserver.url_for(PATH), "secret": SECRET,
                                               "contact_fields": ["email", "company"]})
    httpserver.expect_oneshot_request(PATH, method="POST").respond_with_data("ok")
    contact_id, effect_id = webhook_message(runtime, ws, email="ana@acme.io", company="Acme", phone="+14155550100",
                                            score=55.0, grade="A")

    assert run_effects(runtime, [effect_id])["done"] == 1

    (request, _), = httpserver.log
    assert receiver_accepts(request.headers, request.get_data())
    assert json.loads(request.get_data())["data"] == {
        "contact_id": contact_id, "segment": "buyers", "score": 55.0, "grade": "A",
        "contact": {"email": "ana@acme.io", "company": "Acme"}}
    with transaction(runtime.engine) as session:
        assert session.get(LeadEffect, effect_id).result == {"sent": "webhook"}


def test_the_cli_stores_the_webhook_channel_with_its_secret_masked(runtime, workspace):
    ws = workspace["workspace_id"]

    result = CliRunner().invoke(hub_cli, ["notice", "channel", "--workspace", ws, "--channel", "webhook",
                                          "--setting", "url=https://crm.example.com/hooks", "--setting",
                                          f"secret={SECRET}", "--setting", "contact_fields=email,first_name"])

    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["kind: webhook", "url: https://crm.example.com/hooks", "secret: ***",
                                          "contact_fields: email, first_name", "timeout: 10"]
    shown = CliRunner().invoke(hub_cli, ["notice", "show", "--workspace", ws]).output
    assert "webhook.secret: ***" in shown and SECRET not in shown


@pytest.mark.parametrize("args, message", [
    (["notice", "channel", "--channel", "webhook", "--setting", "url=https://h.example/x",
      "--setting", "secret=whsec_c2hvcnQ="], '"secret": ["a Standard Webhooks secret'),
    (["notice", "channel", "--channel", "slack", "--setting", "webhook_url=https://h.example/x"],
     "unknown message channel slack; one of sms, webhook"),
    (["notice", "set", "--kind", "webhook", "--setting", "url=https://h.example/x"],
     "unknown notice kind webhook; one of email, slack"),
])
def test_the_cli_refuses_a_bad_channel_and_stores_nothing(runtime, workspace, args, message):
    from hub.models import Workspace

    ws = workspace["workspace_id"]
    result = CliRunner().invoke(hub_cli, [*args, "--workspace", ws])

    assert result.exit_code != 0 and message in result.output
    with transaction(runtime.engine) as session:
        assert session.get(Workspace, ws).settings == {}


def test_stored_settings_that_no_longer_validate_fail_the_effect_without_crashing_the_worker(runtime, workspace):
    from hub.models import Workspace

    ws = workspace["workspace_id"]
    bad = runtime.vault.encrypt({"url": "https://crm.example.com/hooks", "secret": "whsec_c2hvcnQ="})
    with transaction(runtime.engine) as session:
        session.get(Workspace, ws).settings = {"message_channels": {"webhook": {"kind": "webhook", "settings": bad}}}
    _, effect_id = webhook_message(runtime, ws, email="ana@acme.io")

    assert run_effects(runtime, [effect_id])["failed"] == 1

    with transaction(runtime.engine) as session:
        error = session.get(LeadEffect, effect_id).last_error
    assert error == "FatalError: stored webhook settings invalid: ['secret']"
    assert "c2hvcnQ" not in error
