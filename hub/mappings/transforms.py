"""Value transforms shared by every mapping: email, phone (E.164), names, country, picklists, dates, lengths.

Each transform takes a raw vendor value and returns the canonical value, or raises
`InvalidValueError` (machine-readable `reason`) when the value cannot be made canonical.
`None` and blank strings mean "no value" and come back as `None`.
"""
from __future__ import annotations

import re
from datetime import date, datetime, timezone
from typing import Any, Callable

import phonenumbers
import pycountry
from email_validator import EmailNotValidError, validate_email

from hub.exceptions import InvalidValueError

_WHITESPACE = re.compile(r"\s+")
_DIGITS = re.compile(r"\d[\d,.\s]*")

# Common names that are not ISO 3166 names (pycountry knows official and common names).
COUNTRY_ALIASES = {
    "uk": "GB", "u.k.": "GB", "great britain": "GB", "britain": "GB", "england": "GB",
    "scotland": "GB", "wales": "GB", "northern ireland": "GB",
    "usa": "US", "u.s.": "US", "u.s.a.": "US", "us": "US", "america": "US",
    "united states of america": "US", "deutschland": "DE", "holland": "NL", "the netherlands": "NL",
    "south korea": "KR", "north korea": "KP", "russia": "RU", "vietnam": "VN", "czech republic": "CZ",
    "ivory coast": "CI", "turkey": "TR", "uae": "AE", "iran": "IR", "bolivia": "BO",
    "venezuela": "VE", "tanzania": "TZ", "syria": "SY", "laos": "LA", "moldova": "MD",
}

EPOCH_MS_THRESHOLD = 10**11          # integers above this are epoch milliseconds, below epoch seconds


def blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def text(value: Any) -> str | None:
    """Trimmed text with runs of whitespace collapsed to one space."""
    if blank(value):
        return None
    return _WHITESPACE.sub(" ", str(value)).strip()


def name(value: Any) -> str | None:
    """A person's or company's name: trimmed, whitespace collapsed (case kept as typed)."""
    return text(value)


def email(value: Any) -> str | None:
    """Lower-cased, validated address (syntax only; no DNS). Raises InvalidValueError."""
    if blank(value):
        return None
    candidate = str(value).strip()
    if candidate.lower().startswith("mailto:"):
        candidate = candidate[len("mailto:"):]
    try:
        result = validate_email(candidate, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidValueError("invalid_email", str(exc)) from exc
    return result.normalized.lower()


def phone(value: Any, region: str | None = None) -> str | None:
    """E.164 (`+14155552671`). `region` (ISO alpha-2) is used when the number has no `+` prefix."""
    if blank(value):
        return None
    raw = str(value).strip()
    if raw.startswith("00"):
        raw = "+" + raw[2:]
    try:
        parsed = phonenumbers.parse(raw, (region or "").upper() or None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidValueError("invalid_phone", str(exc)) from exc
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidValueError("invalid_phone", "not a valid number for its region")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def country(value: Any) -> str | None:
    """ISO 3166-1 alpha-2 from an alpha-2/alpha-3 code or an English name."""
    cleaned = text(value)
    if cleaned is None:
        return None
    alias = COUNTRY_ALIASES.get(cleaned.lower())
    if alias:
        return alias
    try:
        return pycountry.countries.lookup(cleaned).alpha_2
    except LookupError as exc:
        raise InvalidValueError("invalid_country", "not an ISO 3166 country name or code") from exc


def integer(value: Any) -> int | None:
    """An integer from `42`, `"1,200"`, `"51-200"` (lower bound) or `"1000+"`."""
    if blank(value):
        return None
    if isinstance(value, bool):
        raise InvalidValueError("invalid_integer", "a boolean is not a number")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    match = _DIGITS.search(str(value))
    if not match:
        raise InvalidValueError("invalid_integer", "no number in the value")
    digits = re.sub(r"[,\s]", "", match.group(0)).split(".")[0]
    if not digits:
        raise InvalidValueError("invalid_integer", "no number in the value")
    return int(digits)


def website(value: Any) -> str | None:
    """A URL as given, trimmed; a bare host gets no scheme added (CRMs store both)."""
    cleaned = text(value)
    return cleaned.replace(" ", "") if cleaned else None


def picklist(value: Any, mapping: dict[str, str], default: str | None = None) -> str | None:
    """Map a picklist value through `mapping` (keys compared case-insensitively)."""
    cleaned = text(value)
    if cleaned is None:
        return None
    folded = {key.lower(): target for key, target in mapping.items()}
    target = folded.get(cleaned.lower(), default)
    if target is None:
        raise InvalidValueError("unmapped_picklist_value", "no mapping for this picklist value")
    return target


def to_datetime(value: Any) -> datetime | None:
    """A UTC datetime from epoch seconds/ms, ISO 8601 (`Z`, `+0000`, `+00:00`) or a date."""
    if blank(value):
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _from_epoch(value)
    cleaned = str(value).strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", cleaned):
        return _from_epoch(float(cleaned))
    cleaned = cleaned.replace("Z", "+00:00").replace("z", "+00:00")
    if re.search(r"[+-]\d{4}$", cleaned) and "T" in cleaned:
        cleaned = cleaned[:-2] + ":" + cleaned[-2:]
    try:
        parsed = datetime.fromisoformat(cleaned)
    except ValueError as exc:
        raise InvalidValueError("invalid_date", "not an ISO 8601 date or epoch time") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _from_epoch(number: float) -> datetime:
    seconds = number / 1000 if abs(number) >= EPOCH_MS_THRESHOLD else number
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (OverflowError, OSError, ValueError) as exc:
        raise InvalidValueError("invalid_date", "epoch time out of range") from exc


def epoch_ms(moment: datetime) -> int:
    return int(round(moment.timestamp() * 1000))


def limit_length(value: str | None, max_length: int | None) -> tuple[str | None, bool]:
    """(value cut to `max_length` characters, whether it was cut)."""
    if value is None or max_length is None or len(value) <= max_length:
        return value, False
    return value[:max_length], True


def boolean(value: Any) -> bool | None:
    """true/false from booleans, 1/0, yes/no, on/off, checked strings."""
    if blank(value):
        return None
    if isinstance(value, bool):
        return value
    folded = str(value).strip().lower()
    if folded in {"true", "1", "yes", "y", "on", "checked", "granted", "opt_in", "subscribed"}:
        return True
    if folded in {"false", "0", "no", "n", "off", "unchecked", "denied", "opt_out", "unsubscribed"}:
        return False
    raise InvalidValueError("invalid_boolean", "not a yes/no value")


# Canonical contact field -> transform (phone numbers take the region separately).
FIELD_TRANSFORMS: dict[str, Callable[[Any], Any]] = {
    "email": email,
    "first_name": name,
    "last_name": name,
    "company": name,
    "title": text,
    "country": country,
    "state": text,
    "city": text,
    "website": website,
    "company_size": integer,
    "industry": text,
    "lifecycle_stage": text,
    "owner": email,          # the owner's email; CRM owner ids are matched to it by hub.sync.owners
}

PHONE_FIELDS = frozenset({"phone", "mobile_phone"})


def canonical(field: str, value: Any, region: str | None = None) -> Any:
    """The canonical form of `value` for contact field `field`. Raises InvalidValueError."""
    if field in PHONE_FIELDS:
        return phone(value, region)
    transform = FIELD_TRANSFORMS.get(field, text)
    return transform(value)
