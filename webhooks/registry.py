"""Incoming vendors by source kind, registered by explicit import."""
from __future__ import annotations

from webhooks import hubspot

# kind -> module with verify(request, secret) and parse(body); form/shop kinds are added here.
SOURCE_RECEIVERS: dict = {}

CRM_RECEIVERS = {"hubspot": hubspot}
