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


# --- form and shop vendors (each as its docs describe; see tests/fixtures/<vendor>/*signature*.json) ---

def _b64_hmac(key: bytes, message: bytes) -> str:
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()


def typeform_headers(secret: str, body: bytes) -> dict:
    return {"Typeform-Signature": "sha256=" + _b64_hmac(secret.encode(), body), "Content-Type": "application/json"}


def webflow_headers(secret: str, body: bytes, timestamp_ms: int | None = None) -> dict:
    timestamp = str(int(time.time() * 1000) if timestamp_ms is None else timestamp_ms)
    digest = hmac.new(secret.encode(), timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"x-webflow-timestamp": timestamp, "x-webflow-signature": digest, "Content-Type": "application/json"}


def shopify_headers(secret: str, body: bytes, topic: str, event_id: str) -> dict:
    return {"X-Shopify-Hmac-Sha256": _b64_hmac(secret.encode(), body), "X-Shopify-Topic": topic,
            "X-Shopify-Event-Id": event_id, "X-Shopify-Shop-Domain": "example-shop.myshopify.com",
            "X-Shopify-API-Version": "2025-10", "Content-Type": "application/json"}


def woocommerce_headers(secret: str, body: bytes, topic: str, delivery_id: str = "0" * 32) -> dict:
    resource, event = topic.split(".", 1)
    return {"X-WC-Webhook-Signature": _b64_hmac(secret.encode(), body), "X-WC-Webhook-Topic": topic,
            "X-WC-Webhook-Resource": resource, "X-WC-Webhook-Event": event,
            "X-WC-Webhook-Source": "https://shop.example.com/", "X-WC-Webhook-ID": "12",
            "X-WC-Webhook-Delivery-ID": delivery_id, "Content-Type": "application/json"}


def standard_webhook_headers(secret: str, message_id: str, body: bytes, timestamp: int | None = None) -> dict:
    """Standard Webhooks: key = base64-decoded secret after `whsec_`; content = id.timestamp.body."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    text = secret.removeprefix("whsec_")
    key = base64.b64decode(text + "=" * (-len(text) % 4))
    signed = message_id.encode() + b"." + stamp.encode() + b"." + body
    return {"webhook-id": message_id, "webhook-timestamp": stamp,
            "webhook-signature": "v1," + _b64_hmac(key, signed), "Content-Type": "application/json"}
