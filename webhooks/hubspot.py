"""HubSpot app webhooks: signature v3 (v1/v2 legacy), batches of up to 100 contact events.

Signature precedence (DESIGN.md): a request with `X-HubSpot-Signature-v3` is judged by v3 alone.
v1 carries no timestamp, so a replayed v1 request is stopped by deduplication alone.
"""
from __future__ import annotations

import time

from hub.exceptions import PayloadError, SignatureError
from webhooks.common import (
    IncomingEvent,
    check_timestamp,
    from_epoch_ms,
    hmac_sha256_b64,
    load_json,
    parse_int_header,
    require_header,
    sha256_hex,
    signatures_match,
)

SOURCE = "hubspot"
MAX_BATCH = 100

# Percent-escapes HubSpot's docs say to decode in the URI before hashing (v3).
_URI_ESCAPES = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$", "%27": "'",
    "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}

KNOWN_KINDS = frozenset({
    "contact.creation", "contact.propertyChange", "contact.deletion", "contact.merge",
    "contact.privacyDeletion", "contact.associationChange", "contact.restore",
})


def decode_uri(uri: str) -> str:
    for escape, char in _URI_ESCAPES.items():
        uri = uri.replace(escape, char).replace(escape.lower(), char)
    return uri


def v3_signature(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    return hmac_sha256_b64(secret, method.encode() + uri.encode() + body + timestamp.encode())


def v1_signature(secret: str, body: bytes) -> str:
    return sha256_hex(secret.encode() + body)


def v2_signature(secret: str, method: str, uri: str, body: bytes) -> str:
    return sha256_hex(secret.encode() + method.encode() + uri.encode() + body)


def verify(request, secret: str, public_uri: str, now: float | None = None) -> None:
    """Raise SignatureError unless the request was signed with `secret`.

    `public_uri` is the full URL HubSpot called (scheme, host, path, query).
    """
    body = request.get_data(cache=True)
    method = request.method
    v3 = request.headers.get("X-HubSpot-Signature-v3")
    if v3:
        timestamp = require_header(request, "X-HubSpot-Request-Timestamp")
        check_timestamp(parse_int_header(timestamp) / 1000, now=time.time() if now is None else now)
        for uri in {decode_uri(public_uri), public_uri}:
            if signatures_match(v3_signature(secret, method, uri, body, timestamp.strip()), v3):
                return
        raise SignatureError("bad_signature")
    legacy = require_header(request, "X-HubSpot-Signature")
    version = (request.headers.get("X-HubSpot-Signature-Version") or "v1").lower()
    if version == "v1":
        expected = v1_signature(secret, body)
    elif version == "v2":
        expected = v2_signature(secret, method, public_uri, body)
    else:
        raise SignatureError("unsupported_signature_version")
    if not signatures_match(expected, legacy.lower()):
        raise SignatureError("bad_signature")


def dedupe_key(item: dict) -> str:
    # eventId alone is not unique (vendor docs); attemptNumber is left out so retries collapse.
    parts = (item.get("portalId"), item.get("subscriptionId"), item.get("eventId"),
             item.get("occurredAt"), item.get("objectId", item.get("fromObjectId")))
    return "hubspot:" + ":".join("" if p is None else str(p) for p in parts)


def parse(body: bytes) -> list[IncomingEvent]:
    items = load_json(body)
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list) or not items:
        raise PayloadError("malformed_payload", "expected a JSON array of events")
    if len(items) > MAX_BATCH:
        raise PayloadError("batch_too_large", f"at most {MAX_BATCH} events per delivery")
    events = []
    for item in items:
        if not isinstance(item, dict) or "subscriptionType" not in item or "portalId" not in item:
            raise PayloadError("malformed_payload", "each event needs subscriptionType and portalId")
        events.append(IncomingEvent(
            source=SOURCE,
            kind=str(item["subscriptionType"]),
            dedupe_key=dedupe_key(item),
            payload=item,
            occurred_at=from_epoch_ms(item.get("occurredAt")),
            account_id=str(item["portalId"]),
        ))
    return events
