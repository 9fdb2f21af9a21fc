"""SMS to contacts through Twilio's Messages API (https://www.twilio.com/docs/messaging/api/message-resource).

`POST {api_base}/2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded `To` (E.164), `Body`
(at most 1600 characters) and `From` and/or `MessagingServiceSid`, with HTTP basic auth
AccountSid:AuthToken. Twilio answers 201 with the Message resource (its `sid` is returned). Errors
come as `{"code", "message", "more_info", "status"}`; the message may quote the phone number, so only
the code is kept. Timeouts, 429 (code 20429) and 5xx are retriable; other answers (21211 invalid
number, 21610 unsubscribed recipient, 20003 bad credentials...) are fatal.
"""
from __future__ import annotations

import logging
import re

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from hub import defaults
from hub.connectors.notice import Notice, NoticeKind, post, raise_for_answer
from hub.exceptions import FatalError

logger = logging.getLogger(__name__)

E164 = re.compile(r"^\+[1-9]\d{6,14}$")


class SmsSettings(Schema):
    account_sid = fields.String(required=True, validate=validate.Regexp(r"^AC[0-9a-fA-F]{32}$",
                                                                        error="a Twilio Account SID (AC...)"))
    auth_token = fields.String(required=True, validate=validate.Length(min=1), metadata={"secret": True})
    from_number = fields.String(load_default=None, allow_none=True, validate=validate.Length(1, 32))
    messaging_service_sid = fields.String(load_default=None, allow_none=True, validate=validate.Regexp(
        r"^MG[0-9a-fA-F]{32}$", error="a Twilio Messaging Service SID (MG...)"))
    api_base = fields.Url(load_default=defaults.DEFAULT_TWILIO_API_BASE, schemes={"https", "http"})
    timeout = fields.Float(load_default=defaults.HTTP_TIMEOUT_SECONDS, validate=validate.Range(0.1, 60))

    @validates_schema(skip_on_field_errors=True)
    def has_a_sender(self, data, **kwargs):
        if not data.get("from_number") and not data.get("messaging_service_sid"):
            raise ValidationError("give from_number or messaging_service_sid", "from_number")


class SmsNotice(NoticeKind):
    kind = "sms"
    settings_schema = SmsSettings

    def url(self) -> str:
        base = self.settings["api_base"].rstrip("/")
        return f"{base}/2010-04-01/Accounts/{self.settings['account_sid']}/Messages.json"

    def form(self, notice: Notice) -> dict:
        to = notice.to[0] if notice.to else ""
        if not E164.match(to):
            raise FatalError("the sms recipient is not an E.164 number", code="BAD_NUMBER")
        form = {"To": to, "Body": (notice.text or notice.subject)[:defaults.SMS_BODY_MAX_CHARS]}
        if self.settings.get("messaging_service_sid"):
            form["MessagingServiceSid"] = self.settings["messaging_service_sid"]
        if self.settings.get("from_number"):
            form["From"] = self.settings["from_number"]
        return form

    def send(self, notice: Notice) -> str | None:
        response = post("twilio", self.url(), self.settings["timeout"], data=self.form(notice),
                        auth=(self.settings["account_sid"], self.settings["auth_token"]))
        code = _error_code(response)
        raise_for_answer("twilio", response, code=code, detail=f"error {code}")
        sid = _json(response).get("sid")
        logger.info("sms accepted by twilio: %s", sid)
        return sid


def _json(response) -> dict:
    try:
        document = response.json()
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _error_code(response) -> str:
    code = _json(response).get("code")
    return str(code) if code is not None else f"HTTP_{response.status_code}"
