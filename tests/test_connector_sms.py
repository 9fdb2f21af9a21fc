"""SMS through Twilio's Messages API (answers from tests/fixtures/twilio, shaped after Twilio's docs):
the request format, error classification without the phone number in errors, and the sms message channel."""
from __future__ import annotations

import base64
from urllib.parse import parse_qs

import pytest
import requests
import responses
from click.testing import CliRunner
from marshmallow import ValidationError

from hub.cli import main as hub_cli
from hub.connectors.notice import Notice
from hub.connectors.sms import SmsNotice
from hub.db import transaction
from hub.exceptions import FatalError, RetriableError
from hub.models import Contact, LeadEffect
from hub.rules.effects import run_effects
from hub.rules.messages import configure_channel
from tests.conftest import fixture_json

BASE = "https://twilio.test"
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "twilio-auth-token-1"
SERVICE_SID = "MG" + "fedcba9876543210" * 2
MESSAGES_URL = f"{BASE}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
TO = "+14155550100"
SETTINGS = {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "from_number": "+15557122661", "api_base": BASE}


def sms(**settings) -> SmsNotice:
    return SmsNotice({**SETTINGS, **settings})


def form_of(call) -> dict:
    return {name: values[0] for name, values in parse_qs(call.request.body).items()}


@responses.activate
def test_a_message_is_posted_form_encoded_with_basic_auth_and_the_sid_returned():
    responses.post(MESSAGES_URL, json=fixture_json("twilio/message.create__201.json"), status=201)

    sid = sms(timeout=4).send(Notice(subject="Hello", text="Hi Ana, thanks for your interest", to=(TO,)))

    assert sid == "SMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
    call, = responses.calls
    assert call.request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert call.request.headers["Authorization"] == "Basic " + base64.b64encode(
        f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    assert form_of(call) == {"To": TO, "From": "+15557122661", "Body": "Hi Ana, thanks for your interest"}
    assert call.request.req_kwargs["timeout"] == 4


@responses.activate
def test_a_messaging_service_sends_instead_of_a_number_and_long_bodies_are_cut_to_twilios_limit():
    responses.post(MESSAGES_URL, json=fixture_json("twilio/message.create__201.json"), status=201)

    sms(from_number=None, messaging_service_sid=SERVICE_SID).send(Notice(subject="", text="x" * 2000, to=(TO,)))

    form = form_of(responses.calls[0])
    assert (form["MessagingServiceSid"], "From" in form, len(form["Body"])) == (SERVICE_SID, False, 1600)


@pytest.mark.parametrize("fixture, status, error, code", [
    ("error__21211-invalid-to.json", 400, FatalError, "21211"),
    ("error__20003-authenticate.json", 401, FatalError, "20003"),
    ("error__20429-too-many-requests.json", 429, RetriableError, None),
])
@responses.activate
def test_twilio_errors_are_classified_and_never_quote_the_number(fixture, status, error, code):
    responses.post(MESSAGES_URL, json=fixture_json(f"twilio/{fixture}"), status=status, headers={"Retry-After": "3"})

    with pytest.raises(error) as caught:
        sms().send(Notice(subject="", text="Hi", to=(TO,)))

    assert caught.value.status == status and getattr(caught.value, "code", None) == code
    assert TO not in str(caught.value)
    if error is RetriableError:
        assert caught.value.retry_after == 3.0


@pytest.mark.parametrize("failure", [requests.ConnectTimeout("slow"), requests.ConnectionError("reset")])
@responses.activate
def test_network_failures_are_retriable(failure):
    responses.post(MESSAGES_URL, body=failure)

    with pytest.raises(RetriableError, match="twilio unreachable"):
        sms().send(Notice(subject="", text="Hi", to=(TO,)))


@responses.activate
def test_a_server_error_is_retriable():
    responses.post(MESSAGES_URL, body="upstream", status=503)

    with pytest.raises(RetriableError) as caught:
        sms().send(Notice(subject="", text="Hi", to=(TO,)))
    assert caught.value.status == 503


@pytest.mark.parametrize("number", ["4155550100", "+0155550100", "", "+1 415 555 0100"])
@responses.activate
def test_a_number_that_is_not_e164_is_refused_before_any_call(number):
    with pytest.raises(FatalError) as caught:
        sms().send(Notice(subject="", text="Hi", to=(number,) if number else ()))

    assert caught.value.code == "BAD_NUMBER" and len(responses.calls) == 0


@pytest.mark.parametrize("settings, field", [
    ({"from_number": None}, "from_number"),
    ({"account_sid": "AC123"}, "account_sid"),
    ({"messaging_service_sid": "MG1"}, "messaging_service_sid"),
    ({"auth_token": ""}, "auth_token"),
])
def test_bad_settings_are_refused(settings, field):
    with pytest.raises(ValidationError) as caught:
        sms(**settings)
    assert field in caught.value.messages


# --- as a message channel -----------------------------------------------------------------------

def add_contact_and_message(runtime, ws, email, consent) -> int:
    with transaction(runtime.engine) as session:
        contact = Contact(workspace_id=ws, email=email, first_name="Ana", phone="+14155550199",
                          mobile_phone=TO, consent=consent, custom={})
        session.add(contact)
        session.flush()
        effect = LeadEffect(workspace_id=ws, contact_id=contact.id, kind="message", result={},
                            idempotency_key=f"k:{contact.id}",
                            params={"channel": "sms", "segment": "buyers", "on": "enter", "text": "Hi {first_name}"})
        session.add(effect)
        session.flush()
        return effect.id


@responses.activate
def test_a_message_effect_on_the_sms_channel_texts_the_contacts_mobile(runtime, workspace):
    ws = workspace["workspace_id"]
    configure_channel(runtime, ws, "sms", SETTINGS)
    responses.post(MESSAGES_URL, json=fixture_json("twilio/message.create__201.json"), status=201)
    sent = add_contact_and_message(runtime, ws, "ana@acme.io", {"sms": {"granted": True, "source": "form"}})
    refused = add_contact_and_message(runtime, ws, "bo@acme.io", {"email": {"granted": True, "source": "form"}})

    run_effects(runtime, [sent, refused])

    assert [form_of(call) for call in responses.calls] == [{"To": TO, "From": "+15557122661", "Body": "Hi Ana"}]
    with transaction(runtime.engine) as session:
        assert session.get(LeadEffect, sent).result == {"sent": "sms"}
        assert session.get(LeadEffect, refused).result == {"skipped": "no_consent"}


def test_the_cli_stores_the_sms_channel_with_the_token_masked(runtime, workspace):
    args = ["notice", "channel", "--workspace", workspace["workspace_id"], "--channel", "sms"]
    args += [arg for name, value in SETTINGS.items() for arg in ("--setting", f"{name}={value}")]

    result = CliRunner().invoke(hub_cli, args)

    assert result.exit_code == 0, result.output
    assert "auth_token: ***" in result.output.splitlines() and AUTH_TOKEN not in result.output
