"""Outbound channel kinds (Slack, email, SMS, signed webhook): the message shape, the base class, the registry.

Each kind declares `kind`, a marshmallow settings schema whose secret fields carry
`metadata={"secret": True}` (masked by `masked_settings`, for logs and the UI) and one entry point,
`send(notice)`. Kinds are registered by explicit import below, not by dotted strings.
Vendor errors are classified like the CRM connectors': RetriableError (timeouts, 429, 5xx) or
FatalError (bad settings, refused by the service).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import requests
from marshmallow import Schema

from hub.exceptions import FatalError, RetriableError

RETRIABLE_STATUSES = frozenset({408, 425, 429})     # and every 5xx


@dataclass(frozen=True)
class Notice:
    """One message to people: a subject line, a text body, and optional links/fields for rich kinds."""

    subject: str
    text: str
    fields: dict = field(default_factory=dict, hash=False)
    url: str | None = None
    idempotency_key: str | None = None
    to: tuple[str, ...] = ()              # email: recipients instead of the channel's default list; sms: the number
    event_type: str | None = None         # webhook: the event's "type"
    data: dict = field(default_factory=dict, hash=False)   # webhook: the event's "data" (the kind filters contact fields)


class NoticeKind:
    kind: str = ""
    settings_schema: type[Schema] = Schema

    def __init__(self, settings: dict):
        self.settings = self.settings_schema().load(settings)

    def send(self, notice: Notice) -> str | None:
        """Deliver; returns the service's message id when it gives one."""
        raise NotImplementedError

    @classmethod
    def secret_fields(cls) -> set[str]:
        return {name for name, f in cls.settings_schema().fields.items() if f.metadata.get("secret")}

    @classmethod
    def masked_settings(cls, settings: dict) -> dict:
        secret = cls.secret_fields()
        return {name: ("***" if name in secret and value else value) for name, value in settings.items()}


def post(service: str, url: str, timeout: float, **kwargs) -> requests.Response:
    """One POST with a timeout and no redirects; network failures and timeouts are RetriableError."""
    try:
        return requests.post(url, timeout=timeout, allow_redirects=False, **kwargs)
    except (requests.Timeout, requests.ConnectionError) as exc:
        raise RetriableError(f"{service} unreachable: {type(exc).__name__}") from None


def raise_for_answer(service: str, response: requests.Response, code: str | None = None,
                     detail: str | None = None) -> None:
    """Classify a non-2xx answer: 408/425/429/5xx retriable (Retry-After in seconds honoured), others fatal.

    `code`/`detail` are what the caller may show of the answer (never personal data); default: its text.
    """
    status = response.status_code
    if 200 <= status < 300:
        return
    detail = response.text[:100] if detail is None else detail
    if status in RETRIABLE_STATUSES or status >= 500:
        value = (response.headers.get("Retry-After") or "").strip()
        raise RetriableError(f"{service} answered {status}", status=status,
                             retry_after=float(value) if value.isdigit() else None)
    raise FatalError(f"{service} refused the message: {detail}", code=code or detail[:60], status=status)


def notice_kinds() -> dict[str, type[NoticeKind]]:
    from hub.connectors.email import EmailNotice
    from hub.connectors.slack import SlackNotice
    from hub.connectors.sms import SmsNotice
    from hub.connectors.webhook import WebhookNotice

    return {kind.kind: kind for kind in (SlackNotice, EmailNotice, SmsNotice, WebhookNotice)}
