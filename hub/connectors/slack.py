"""Slack notices through an incoming webhook (https://api.slack.com/messaging/webhooks).

POST the webhook URL with `{"text": ..., "blocks": [...]}`; Slack answers 200 "ok". 429 carries
Retry-After; 5xx are retriable; 400/403/404/410 (invalid_payload, action_prohibited, no_service,
channel_is_archived...) are fatal: the URL or the app's permissions need fixing.
"""
from __future__ import annotations

import logging

from marshmallow import Schema, fields, validate

from hub import defaults
from hub.connectors.notice import Notice, NoticeKind, post, raise_for_answer

logger = logging.getLogger(__name__)


class SlackSettings(Schema):
    webhook_url = fields.Url(required=True, schemes={"https", "http"}, metadata={"secret": True})
    timeout = fields.Float(load_default=defaults.HTTP_TIMEOUT_SECONDS, validate=validate.Range(0.1, 60))


class SlackNotice(NoticeKind):
    kind = "slack"
    settings_schema = SlackSettings

    def payload(self, notice: Notice) -> dict:
        lines = [f"*{notice.subject}*", notice.text]
        lines += [f"• {name}: {value}" for name, value in notice.fields.items()]
        if notice.url:
            lines.append(notice.url)
        text = "\n".join(line for line in lines if line)
        return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}]}

    def send(self, notice: Notice) -> str | None:
        response = post("slack", self.settings["webhook_url"], self.settings["timeout"], json=self.payload(notice))
        raise_for_answer("slack", response)
        return None
