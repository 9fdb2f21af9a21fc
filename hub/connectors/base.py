"""The small interface every CRM connector implements, and the record shapes it speaks.

CRM clients are declarative where they can be (object name, id property, batch size as class
attributes) with behaviour in a few named hooks. Vendor errors are classified at this boundary:
`hub.exceptions.RetriableError` (429, 423, 5xx, timeouts; carries retry_after) or
`hub.exceptions.FatalError` (auth, validation; carries the vendor's code).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterator


@dataclass
class CrmRecord:
    """A CRM record in the CRM's own field names (HubSpot properties / Salesforce fields)."""

    object_type: str                      # "contact" (HubSpot) | "Lead" | "Contact" (Salesforce)
    id: str | None
    properties: dict[str, Any]
    updated_at: datetime | None = None
    field_times: dict[str, datetime] = field(default_factory=dict)
    modified_by: str | None = None        # Salesforce LastModifiedById / HubSpot source id


@dataclass
class WriteResult:
    """One record's outcome in a batch write: one bad record fails alone."""

    key: str                              # the caller's key (email or record id)
    id: str | None
    ok: bool
    error_code: str | None = None
    error_message: str | None = None
    created: bool = False


@dataclass
class ChangePage:
    records: list[CrmRecord]
    cursor: str | None                    # resume here; None when done


class CrmConnector:
    """Read changes, batch upsert, search by email, describe fields."""

    kind: str = ""
    batch_size: int = 100

    def read_changes(self, cursor: str | None) -> ChangePage:
        raise NotImplementedError

    def iter_all(self, cursor: str | None = None) -> Iterator[ChangePage]:
        raise NotImplementedError

    def batch_upsert(self, records: list[CrmRecord]) -> list[WriteResult]:
        raise NotImplementedError

    def find_by_email(self, emails: list[str]) -> dict[str, CrmRecord]:
        raise NotImplementedError

    def describe_fields(self, object_type: str) -> dict[str, dict]:
        raise NotImplementedError
