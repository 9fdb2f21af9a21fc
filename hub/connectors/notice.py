"""Outbound channel kinds (Slack, email, SMS, signed webhook): the message shape, the base class, the registry.

Each kind declares `kind`, a marshmallow settings schema whose secret fields carry
`metadata={"secret": True}` (masked by `masked_settings`, for logs and the UI) and one entry point,
`send(notice)`. Kinds are registered by explicit import below, not by dotted strings.
Vendor errors are classified like the CRM connectors': RetriableError (timeouts, 429, 5xx) or
FatalError (bad settings, refused by the service).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from marshmallow import Schema


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


def notice_kinds() -> dict[str, type[NoticeKind]]:
    from hub.connectors.email import EmailNotice
    from hub.connectors.slack import SlackNotice

    return {SlackNotice.kind: SlackNotice, EmailNotice.kind: EmailNotice}
