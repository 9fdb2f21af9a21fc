"""What every incoming vendor shares: the event shape, HMAC helpers, timestamp windows, headers."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import orjson

from hub import defaults
from hub.exceptions import PayloadError, SignatureError


@dataclass
class IncomingEvent:
    """One vendor event, verified and parsed, not yet stored.

    `dedupe_key` is unique per workspace: a redelivery produces the same key.
    `account_id` is the vendor account that sent it (HubSpot portalId, Salesforce org id).
    """

    source: str
    kind: str
    dedupe_key: str
    payload: dict
    occurred_at: datetime | None = None
    account_id: str | None = None
    extra: dict = field(default_factory=dict)


def hmac_sha256(secret: str | bytes, message: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    msg = message.encode() if isinstance(message, str) else message
    return hmac.new(key, msg, hashlib.sha256).digest()


def hmac_sha256_b64(secret: str | bytes, message: str | bytes) -> str:
    return base64.b64encode(hmac_sha256(secret, message)).decode()


def hmac_sha256_hex(secret: str | bytes, message: str | bytes) -> str:
    return hmac_sha256(secret, message).hex()


def sha256_hex(message: str | bytes) -> str:
    return hashlib.sha256(message.encode() if isinstance(message, str) else message).hexdigest()


def signatures_match(expected: str, given: str | None) -> bool:
    """Constant-time comparison; a missing header never matches."""
    if not given:
        return False
    return hmac.compare_digest(expected.encode(), given.strip().encode())


def require_header(request, name: str) -> str:
    value = request.headers.get(name)
    if not value:
        raise SignatureError("missing_signature", f"missing header {name}")
    return value


def check_timestamp(timestamp_seconds: float, now: float | None = None,
                    tolerance: int = defaults.SIGNATURE_TOLERANCE_SECONDS) -> None:
    """Refuse signed timestamps outside the window (stale replays, or clocks far off)."""
    now = time.time() if now is None else now
    if abs(now - timestamp_seconds) > tolerance:
        raise SignatureError("stale_timestamp", "signed timestamp is outside the allowed window")


def parse_int_header(value: str, reason: str = "bad_timestamp") -> int:
    try:
        return int(value.strip())
    except (TypeError, ValueError) as exc:
        raise SignatureError(reason, "timestamp header is not an integer") from exc


def from_epoch_ms(value) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        return datetime.fromtimestamp(int(value) / 1000, tz=timezone.utc)
    except (TypeError, ValueError, OverflowError) as exc:
        raise PayloadError("bad_timestamp", f"not an epoch-ms timestamp: {value!r}") from exc


def from_iso(value) -> datetime | None:
    """ISO 8601, with `Z` or `+0000` offsets (Salesforce REST uses +0000)."""
    if not value:
        return None
    text = str(value).strip().replace("Z", "+00:00")
    if len(text) > 5 and text[-5] in "+-" and text[-3] != ":":
        text = text[:-2] + ":" + text[-2:]
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise PayloadError("bad_timestamp", f"not an ISO 8601 time: {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


# A run of 19 digits may be an integer orjson would turn into a float (it keeps 64 bits exactly).
# Found by mapping every digit to "0" and everything else to " " (a regex scan costs several times more).
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_LONG_NUMBER = b"0" * 19


def load_json(body: bytes):
    """The body's JSON value. orjson is several times faster; the standard library decides whatever it
    refuses (NaN, lone surrogates, other encodings) and any body with a number too wide for it."""
    if isinstance(body, bytes) and _LONG_NUMBER not in body.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError("malformed_json", "body is not valid JSON") from exc


MAX_DEDUPE_KEY = 255    # hub.models.Event.dedupe_key length


def bounded_key(*parts) -> str:
    """Join parts into a dedupe key; past the column length the tail is replaced by its hash."""
    key = ":".join("" if part is None else str(part) for part in parts)
    if len(key) <= MAX_DEDUPE_KEY:
        return key
    return f"{parts[0]}:sha256:{sha256_hex(key)}"


def key_hash(value: str) -> str:
    """A short stable stand-in for a value that must not be stored as is (e.g. a source key)."""
    return sha256_hex(value)[:16]


def verify_hmac(expected: str, given: str | None) -> None:
    if not given:
        raise SignatureError("missing_signature")
    if not signatures_match(expected, given):
        raise SignatureError("bad_signature")


# --- form answers -----------------------------------------------------------------------------------
# Form sources name fields freely ("Work email", "First Name", "job_title"). Labels are compared
# after lower-casing and collapsing punctuation to "_"; values are passed through untouched
# (processing normalises them).

FORM_FIELD_ALIASES = {
    "email": ("email", "e_mail", "email_address", "work_email", "business_email", "your_email", "mail"),
    "first_name": ("first_name", "firstname", "first", "given_name", "fname", "forename"),
    "last_name": ("last_name", "lastname", "last", "surname", "family_name", "lname"),
    "phone": ("phone", "phone_number", "telephone", "telephone_number", "tel", "work_phone", "business_phone"),
    "mobile_phone": ("mobile_phone", "mobile", "mobile_number", "cell", "cell_phone", "mobilephone"),
    "company": ("company", "company_name", "organization", "organisation", "organization_name",
                "organisation_name", "business_name", "employer"),
    "title": ("title", "job_title", "jobtitle", "role", "position", "job_role"),
    "country": ("country", "country_code", "country_region"),
    "state": ("state", "province", "region", "state_province", "county"),
    "city": ("city", "town"),
    "website": ("website", "company_website", "web_site", "homepage"),
    "company_size": ("company_size", "employees", "number_of_employees", "num_employees", "numemployees",
                     "employee_count", "team_size", "headcount", "company_employees"),
    "industry": ("industry", "sector"),
}
FULL_NAME_LABELS = frozenset({"name", "full_name", "fullname", "your_name", "contact_name"})
CONSENT_ALIASES = {
    "email": ("consent", "email_consent", "consent_email", "marketing_consent", "email_opt_in", "opt_in",
              "newsletter", "subscribe", "accepts_marketing", "marketing_opt_in"),
    "sms": ("sms_consent", "consent_sms", "sms_opt_in", "text_opt_in"),
}
_LABEL_TO_FIELD = {alias: name for name, aliases in FORM_FIELD_ALIASES.items() for alias in aliases}
_LABEL_TO_CONSENT = {alias: channel for channel, aliases in CONSENT_ALIASES.items() for alias in aliases}
_TRUE = frozenset({"true", "on", "yes", "y", "1", "checked", "agree", "accepted"})
_FALSE = frozenset({"false", "off", "no", "n", "0", ""})


def label_key(label) -> str:
    """'Work E-mail ' -> 'work_e_mail'; the key unknown answers are kept under in `custom`."""
    out, gap = [], False
    for char in str(label).strip().lower():
        if char.isalnum():
            if gap and out:
                out.append("_")
            out.append(char)
            gap = False
        else:
            gap = True
    return "".join(out)


def form_field_for(label) -> str | None:
    """The canonical field a form label stands for, if any."""
    return _LABEL_TO_FIELD.get(label_key(label))


def truthy(value) -> bool | None:
    """A checkbox/yes-no answer as a bool; None when it says neither."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    return None


def is_blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value in ([], {})


@dataclass
class FormAnswers:
    """Form answers sorted into canonical fields, consent flags and custom attributes."""

    fields: dict = field(default_factory=dict)
    consent: dict = field(default_factory=dict)
    custom: dict = field(default_factory=dict)
    full_name: str | None = None

    def add(self, label, value) -> None:
        """Blank answers are skipped: an optional field left empty never clears a known value."""
        if is_blank(value):
            return
        key = label_key(label)
        if key in _LABEL_TO_FIELD:
            self.fields.setdefault(_LABEL_TO_FIELD[key], value)
        elif key in _LABEL_TO_CONSENT and truthy(value) is not None:
            self.consent.setdefault(_LABEL_TO_CONSENT[key], truthy(value))
        elif key in FULL_NAME_LABELS and isinstance(value, str):
            self.full_name = self.full_name or value
        elif key:
            self.custom.setdefault(key, value)

    def finish(self) -> "FormAnswers":
        """A single "Name" answer fills first/last name only where those were not asked."""
        if self.full_name and not ({"first_name", "last_name"} & self.fields.keys()):
            first, _, last = self.full_name.strip().partition(" ")
            self.fields["first_name"] = first
            if last.strip():
                self.fields["last_name"] = last.strip()
        elif self.full_name:
            self.custom.setdefault("name", self.full_name)
        return self


# Activity kinds scoring knows; a form whose name mentions one of these words is that activity.
FORM_ACTIVITY_WORDS = (("demo", "demo_request"),)


def form_activity_kind(form_name) -> str:
    words = label_key(form_name or "")
    for word, kind in FORM_ACTIVITY_WORDS:
        if word in words.split("_"):
            return kind
    return "form_submit"
