"""Structured (JSON) logs with secrets and personal data masked."""
from __future__ import annotations

import json
import logging
import re
import sys

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+)")
_BEARER = re.compile(r"(?i)(bearer\s+|token[\"'=:\s]+|secret[\"'=:\s]+|password[\"'=:\s]+)[^\s\"',&]+")
_PHONE = re.compile(r"\+?\d[\d\s().-]{7,}\d")


def mask(text: str) -> str:
    """Mask emails (keep first letter and domain), phone numbers and tokens."""
    text = _BEARER.sub(r"\1***", text)
    text = _EMAIL.sub(r"\1***@\2", text)
    return _PHONE.sub("***phone***", text)


def mask_email(email: str | None) -> str:
    return mask(email) if email else ""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": mask(record.getMessage()),
        }
        if record.exc_info:
            entry["exc"] = mask(self.formatException(record.exc_info))
        return json.dumps(entry)


def configure(level: int = logging.INFO) -> None:
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)


def init_app(app) -> None:
    if not app.testing:
        configure()
