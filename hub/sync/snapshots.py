"""CRM records read by backfill or polling, stored as events so processing applies them like webhooks.

A Salesforce record becomes a `salesforce` event of kind Lead/Contact with the payload shape the
Outbound Message receiver stores ({"object_type", "record"}); a HubSpot record becomes a `hubspot`
event of kind "contact.snapshot" ({"objectId", "properties", "occurredAt", "propertyTimes"}). A
Salesforce record found in the delete log becomes a `salesforce` event of kind "deleted"
({"object_type", "id", "deletedDate"}).
Dedupe keys hold the record's modification time, so re-reading a page (resume, lookback) stores
nothing twice.
"""
from __future__ import annotations

from datetime import datetime, timezone

from hub.connectors.base import CrmRecord
from hub.mappings.transforms import epoch_ms
from hub.store import PROCESS_JOB, IngestResult, ingest
from webhooks.common import IncomingEvent

HUBSPOT_SNAPSHOT_KIND = "contact.snapshot"


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def salesforce_event(record: CrmRecord, origin: str) -> IncomingEvent:
    fields = {k: v for k, v in record.properties.items() if k != "attributes"}
    fields["Id"] = record.id
    if record.updated_at is not None:
        fields["LastModifiedDate"] = _iso(record.updated_at)
    if record.modified_by:
        fields["LastModifiedById"] = record.modified_by
    stamp = epoch_ms(record.updated_at) if record.updated_at else ""
    return IncomingEvent(source="salesforce", kind=record.object_type,
                         dedupe_key=f"salesforce:{origin}:{record.id}:{stamp}",
                         payload={"object_type": record.object_type, "record": fields, "origin": origin},
                         occurred_at=record.updated_at)


def hubspot_event(record: CrmRecord, origin: str) -> IncomingEvent:
    stamp = epoch_ms(record.updated_at) if record.updated_at else None
    return IncomingEvent(source="hubspot", kind=HUBSPOT_SNAPSHOT_KIND,
                         dedupe_key=f"hubspot:{origin}:{record.id}:{stamp or ''}",
                         payload={"objectId": record.id, "properties": dict(record.properties), "occurredAt": stamp,
                                  "propertyTimes": {k: epoch_ms(v) for k, v in record.field_times.items()},
                                  "origin": origin},
                         occurred_at=record.updated_at)


def salesforce_deleted_event(object_type: str, record_id: str, deleted_at: datetime) -> IncomingEvent:
    """A record found in the org's delete log (a record is deleted once: the id is the dedupe key)."""
    return IncomingEvent(source="salesforce", kind="deleted", dedupe_key=f"salesforce:deleted:{record_id}",
                         payload={"object_type": object_type, "id": record_id, "deletedDate": _iso(deleted_at),
                                  "origin": "poll"},
                         occurred_at=deleted_at)


def store_deleted(engine, workspace_id: str, object_type: str, deleted: list[tuple[str, datetime]]) -> IngestResult:
    return ingest(engine, [(workspace_id, salesforce_deleted_event(object_type, record_id, at))
                           for record_id, at in deleted])


EVENT_BUILDERS = {"salesforce": salesforce_event, "hubspot": hubspot_event}


def store_records(engine, workspace_id: str, system: str, records: list[CrmRecord], origin: str,
                  job: str = PROCESS_JOB) -> IngestResult:
    """Store the records as pending events (one transaction; duplicates ignored); `job`: their outbox
    rows' Outbox.job (hub.store)."""
    build = EVENT_BUILDERS[system]
    return ingest(engine, [(workspace_id, build(record, origin)) for record in records if record.id], job=job)


def hubspot_snapshot_changes(payload: dict) -> list:
    """A HubSpot contact read by backfill/polling as one change: every synced property, with the
    per-property change times when the read carried them (propertiesWithHistory)."""
    from hub.changes import ContactChange
    from webhooks.common import from_epoch_ms
    from webhooks.hubspot import OBJECT_TYPE, PROPERTY_FIELDS, SYSTEM

    fields, times = {}, {}
    property_times = payload.get("propertyTimes") or {}
    for prop, value in (payload.get("properties") or {}).items():
        name = PROPERTY_FIELDS.get(prop)
        if name is None:
            continue
        fields[name] = None if value == "" else value
        if prop in property_times:
            times[name] = from_epoch_ms(property_times[prop])
    return [ContactChange(system=SYSTEM, external_id=str(payload["objectId"]), object_type=OBJECT_TYPE,
                          fields=fields, field_times=times, changed_at=from_epoch_ms(payload.get("occurredAt")),
                          change_source="BACKFILL")]
