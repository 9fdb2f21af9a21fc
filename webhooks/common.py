"""What every incoming vendor shares: the event shape, HMAC helpers, timestamp windows, headers."""
from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

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


def load_json(body: bytes):
    import json

    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError("malformed_json", "body is not valid JSON") from exc
