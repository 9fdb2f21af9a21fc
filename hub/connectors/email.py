"""Email notices over SMTP (STARTTLS or implicit TLS), with a timeout on every connection.

SMTP replies 4xx and network errors are retriable; 5xx replies (bad recipient, refused auth)
are fatal.
"""
from __future__ import annotations

import logging
import smtplib
import socket
import ssl
from email.message import EmailMessage

from marshmallow import Schema, fields, validate

from hub import defaults
from hub.connectors.notice import Notice, NoticeKind
from hub.exceptions import FatalError, RetriableError

logger = logging.getLogger(__name__)


class EmailSettings(Schema):
    host = fields.String(required=True)
    port = fields.Integer(load_default=587, validate=validate.Range(1, 65535))
    security = fields.String(load_default="starttls", validate=validate.OneOf(("starttls", "tls", "none")))
    username = fields.String(load_default=None, allow_none=True)
    password = fields.String(load_default=None, allow_none=True, metadata={"secret": True})
    from_address = fields.Email(required=True)
    to = fields.List(fields.Email(), required=True, validate=validate.Length(min=1))
    timeout = fields.Float(load_default=defaults.HTTP_TIMEOUT_SECONDS, validate=validate.Range(0.1, 60))


class EmailNotice(NoticeKind):
    kind = "email"
    settings_schema = EmailSettings

    def message(self, notice: Notice) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = notice.subject
        message["From"] = self.settings["from_address"]
        message["To"] = ", ".join(notice.to or self.settings["to"])
        if notice.idempotency_key:
            message["X-Hub-Notice-Key"] = notice.idempotency_key
        lines = [notice.text] + [f"{name}: {value}" for name, value in notice.fields.items()]
        if notice.url:
            lines.append(notice.url)
        message.set_content("\n".join(lines))
        return message

    def _connect(self) -> smtplib.SMTP:
        settings = self.settings
        if settings["security"] == "tls":
            return smtplib.SMTP_SSL(settings["host"], settings["port"], timeout=settings["timeout"],
                                    context=ssl.create_default_context())
        client = smtplib.SMTP(settings["host"], settings["port"], timeout=settings["timeout"])
        if settings["security"] == "starttls":
            client.starttls(context=ssl.create_default_context())
        return client

    def send(self, notice: Notice) -> str | None:
        try:
            with self._connect() as client:
                if self.settings.get("username"):
                    client.login(self.settings["username"], self.settings["password"] or "")
                client.send_message(self.message(notice))
        except smtplib.SMTPResponseException as exc:
            if 400 <= exc.smtp_code < 500:
                raise RetriableError(f"smtp {exc.smtp_code}", status=exc.smtp_code) from None
            raise FatalError(f"smtp refused: {exc.smtp_code}", code=str(exc.smtp_code), status=exc.smtp_code) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise FatalError(f"smtp refused {len(exc.recipients)} recipients", code="recipients_refused") from None
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, socket.timeout, ConnectionError,
                OSError) as exc:
            raise RetriableError(f"smtp unreachable: {type(exc).__name__}") from None
        return None
