"""What an incoming event means for the canonical contact, before it is applied.

Each incoming vendor module maps its event kinds to ContactChange values through a
`HANDLERS = {kind: function(payload) -> list[ContactChange]}` table; `hub.sync.processing`
applies them (normalise, resolve identity, per-field timestamps, activities).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Canonical contact fields (hub.models.Contact columns a change may set).
CONTACT_FIELDS = (
    "email", "phone", "mobile_phone", "first_name", "last_name", "company", "title", "country",
    "state", "city", "website", "company_size", "industry", "lifecycle_stage", "owner",
)

ACTIONS = ("upsert", "delete", "erase", "merge", "associate", "ignore")


@dataclass
class ActivitySpec:
    """Behaviour for scoring: form_submit, page_view, email_open, email_click, purchase, demo_request, ..."""

    kind: str
    properties: dict = field(default_factory=dict)
    occurred_at: datetime | None = None


@dataclass
class ContactChange:
    """One change to one person.

    `system`/`external_id` name the record in the sending system (identity); `fields` holds raw
    values keyed by canonical field name (None clears a value); `changed_at` is the vendor's change
    time used for per-field ordering (`field_times` overrides it per field).
    """

    system: str                                   # hubspot | salesforce | form | shop | api
    external_id: str | None = None
    object_type: str | None = None                # Salesforce Lead | Contact; HubSpot contact
    action: str = "upsert"
    fields: dict[str, Any] = field(default_factory=dict)
    changed_at: datetime | None = None
    field_times: dict[str, datetime] = field(default_factory=dict)
    consent: dict[str, bool] = field(default_factory=dict)   # channel -> granted
    custom: dict[str, Any] = field(default_factory=dict)     # unknown fields -> custom attributes
    activity: ActivitySpec | None = None
    merged_external_ids: list[str] = field(default_factory=list)  # merge: ids merged away
    new_external_id: str | None = None            # merge: surviving id when it is new (HubSpot newObjectId)
    change_source: str | None = None              # vendor's changeSource / LastModifiedById
    source_id: str | None = None                  # vendor's sourceId (app id for INTEGRATION)
