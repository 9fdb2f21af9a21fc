"""Test helpers that sign requests the way each vendor documents (not the hub's own code paths)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import time


def hubspot_v3_headers(secret: str, method: str, uri: str, body: bytes, timestamp_ms: int | None = None) -> dict:
    timestamp = str(int(time.time() * 1000) if timestamp_ms is None else timestamp_ms)
    digest = hmac.new(secret.encode(), method.encode() + uri.encode() + body + timestamp.encode(), hashlib.sha256)
    return {"X-HubSpot-Signature-v3": base64.b64encode(digest.digest()).decode(),
            "X-HubSpot-Request-Timestamp": timestamp, "Content-Type": "application/json"}


def hubspot_v1_headers(secret: str, body: bytes) -> dict:
    return {"X-HubSpot-Signature": hashlib.sha256(secret.encode() + body).hexdigest(),
            "X-HubSpot-Signature-Version": "v1", "Content-Type": "application/json"}


def hubspot_v2_headers(secret: str, method: str, uri: str, body: bytes) -> dict:
    return {"X-HubSpot-Signature": hashlib.sha256(secret.encode() + method.encode() + uri.encode() + body).hexdigest(),
            "X-HubSpot-Signature-Version": "v2", "Content-Type": "application/json"}
