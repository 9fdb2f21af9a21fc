"""Signed outbound webhooks (Standard Webhooks, https://www.standardwebhooks.com/) to the workspace's own system.

One POST per message with a JSON event `{"type", "timestamp", "data"}`; `data` holds the contact id,
segment, score and grade, and under "contact" only the contact fields the admin listed in the channel's
`contact_fields` setting. Headers: `webhook-id` (the same on every retry of one message: the receiver's
dedupe key), `webhook-timestamp` (unix seconds of this attempt) and `webhook-signature`
(`v1,<base64 HMAC-SHA256 of id.timestamp.body>`, keyed by the base64-decoded `whsec_` secret; the same
signing code that verifies the hub's incoming generic webhooks, webhooks.standard).
Any 2xx is delivered; timeouts, 408/425/429 and 5xx are retriable; other answers are fatal.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from datetime import datetime, timezone

from marshmallow import Schema, ValidationError, fields, validate, validates

from hub import defaults
from hub.changes import CONTACT_FIELDS
from hub.connectors.notice import Notice, NoticeKind, post, raise_for_answer
from hub.exceptions import SignatureError
from webhooks.standard import SECRET_PREFIX, secret_key, signature

logger = logging.getLogger(__name__)

SECRET_BYTES = (24, 64)                   # the spec's key length range


class WebhookSettings(Schema):
    url = fields.Url(required=True, schemes={"https", "http"})
    secret = fields.String(required=True, metadata={"secret": True})
    contact_fields = fields.List(fields.String(validate=validate.OneOf(CONTACT_FIELDS)), load_default=list)
    timeout = fields.Float(load_default=defaults.HTTP_TIMEOUT_SECONDS, validate=validate.Range(0.1, 60))

    @validates("secret")
    def standard_secret(self, value: str, **kwargs) -> None:
        try:
            key = secret_key(value)
        except SignatureError:
            raise ValidationError(f"a Standard Webhooks secret: {SECRET_PREFIX} then base64") from None
        if not value.startswith(SECRET_PREFIX) or not SECRET_BYTES[0] <= len(key) <= SECRET_BYTES[1]:
            raise ValidationError(f"a Standard Webhooks secret: {SECRET_PREFIX} then base64 of "
                                  f"{SECRET_BYTES[0]}-{SECRET_BYTES[1]} random bytes")


def message_id(idempotency_key: str | None) -> str:
    """The same id for every attempt at one message (from its idempotency key); random without one."""
    if idempotency_key:
        return "msg_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return "msg_" + uuid.uuid4().hex


class WebhookNotice(NoticeKind):
    kind = "webhook"
    settings_schema = WebhookSettings

    def event(self, notice: Notice, now: datetime) -> dict:
        data = {name: value for name, value in notice.data.items() if name != "contact"}
        contact = notice.data.get("contact") or {}
        data["contact"] = {name: contact.get(name) for name in self.settings["contact_fields"]}
        return {"type": notice.event_type or "hub.notice", "timestamp": now.isoformat().replace("+00:00", "Z"),
                "data": data}

    def send(self, notice: Notice) -> str | None:
        ident = message_id(notice.idempotency_key)
        stamp = str(int(time.time()))
        body = json.dumps(self.event(notice, datetime.now(timezone.utc)), separators=(",", ":"),
                          default=str).encode()
        headers = {"webhook-id": ident, "webhook-timestamp": stamp, "content-type": "application/json",
                   "webhook-signature": signature(self.settings["secret"], ident, stamp, body)}
        response = post("webhook", self.settings["url"], self.settings["timeout"], data=body, headers=headers)
        raise_for_answer("webhook", response, code=f"HTTP_{response.status_code}",
                         detail=f"HTTP {response.status_code}")
        logger.info("webhook %s delivered (%s)", ident, response.status_code)
        return ident
