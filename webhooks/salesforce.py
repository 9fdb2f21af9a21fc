"""Salesforce Outbound Messages: SOAP 1.1 notifications (up to 100 per message) for Lead and Contact.

There is no signature: the URL's source key routes the message and `OrganizationId` must be the
connected org (`check_account`). The XML is parsed with defusedxml and any DTD or entity is refused
(400, nothing stored: an unauthenticated body is not kept). Salesforce delivers at least once, so
notifications are deduplicated by their Id, and it retries until it gets the exact SOAP ACK
envelope, which `respond` sends only after the events are committed.
"""
from __future__ import annotations

import logging
import re

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring
from flask import Response

from hub import defaults
from hub.changes import ContactChange
from hub.exceptions import PayloadError, RoutingError
from webhooks.common import IncomingEvent, bounded_key, from_iso

logger = logging.getLogger(__name__)

SOURCE = "salesforce"
MAX_NOTIFICATIONS = 100
STORE_MALFORMED = False      # no signature: a body we cannot read is not known to be Salesforce's

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"

# The documented acknowledgement, byte for byte; anything else makes Salesforce retry.
ACK_ENVELOPE = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
    ' <soapenv:Body>\n'
    '  <notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">\n'
    '   <Ack>true</Ack>\n'
    '  </notificationsResponse>\n'
    ' </soapenv:Body>\n'
    '</soapenv:Envelope>\n'
).encode()
ACK_CONTENT_TYPE = "text/xml; charset=utf-8"

_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
_ID_SUFFIX_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"

# Salesforce field -> canonical field, per object (Contacts keep their address under Mailing*).
_COMMON_FIELDS = {
    "Email": "email", "FirstName": "first_name", "LastName": "last_name", "Phone": "phone",
    "MobilePhone": "mobile_phone", "Title": "title",
    "OwnerId": "owner",                 # a User (or queue) Id; processing matches it to the user's email
}
FIELD_MAP = {
    "Lead": {**_COMMON_FIELDS, "Company": "company", "Country": "country", "State": "state", "City": "city",
             "Website": "website", "NumberOfEmployees": "company_size", "Industry": "industry"},
    "Contact": {**_COMMON_FIELDS, "MailingCountry": "country", "MailingState": "state", "MailingCity": "city",
                "Country": "country", "State": "state", "City": "city"},
}
# Kept in `custom` under a fixed name (no canonical field yet: lifecycle follows Status later).
CUSTOM_NAMES = {"Status": "sf_status", "AccountId": "sf_account_id"}
# Carried in the payload for identity, ordering and echo suppression, not contact attributes.
META_FIELDS = frozenset({
    "Id", "IsConverted", "ConvertedContactId", "ConvertedAccountId", "ConvertedOpportunityId",
    "ConvertedDate", "LastModifiedById", "LastModifiedDate", "SystemModstamp", "CreatedDate",
    "CreatedById", "IsDeleted",
})
# The hub's own write-backs (hub_always): never read back into the contact.
HUB_OWNED_FIELDS = frozenset({"Hub_Score__c", "Hub_Grade__c", "Hub_Score_Reasons__c"})
# Placeholder values the hub writes for required Lead fields mean "unknown", not a value.
PLACEHOLDER_FIELDS = frozenset({"Company", "LastName"})


# --- ids ------------------------------------------------------------------------------------------

def id18(value: str | None) -> str | None:
    """The case-insensitive 18-character form of a 15- or 18-character Salesforce Id."""
    if value is None:
        return None
    text = str(value).strip()
    if not _ID.match(text):
        raise PayloadError("bad_record_id", f"not a Salesforce Id: {text[:40]!r}")
    if len(text) == 18:
        return text
    suffix = ""
    for start in (0, 5, 10):
        bits = sum(1 << i for i, char in enumerate(text[start:start + 5]) if "A" <= char <= "Z")
        suffix += _ID_SUFFIX_CHARS[bits]
    return text + suffix


def same_id(left: str | None, right: str | None) -> bool:
    """15- and 18-character forms name the same record when their case-sensitive 15 characters match."""
    return bool(left and right) and id18(left)[:15] == id18(right)[:15]


# --- receiving ------------------------------------------------------------------------------------

def verify(request, secret: str | None) -> None:
    """Outbound Messages carry no signature; the org check in `check_account` guards the route."""
    return None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _load(body: bytes):
    try:
        return fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise PayloadError("xml_forbidden", "DTDs, entities and external references are refused") from exc
    except ParseError as exc:
        raise PayloadError("malformed_xml", "body is not well-formed XML") from exc


def _notifications_element(root):
    body = root.find(f"{{{SOAP_NS}}}Body")
    node = body.find(f"{{{OUTBOUND_NS}}}notifications") if body is not None else None
    if node is None:
        raise PayloadError("malformed_payload", "expected soapenv:Body/notifications (SOAP 1.1)")
    return node


def _text(node, name: str) -> str | None:
    child = node.find(f"{{{OUTBOUND_NS}}}{name}")
    return child.text.strip() if child is not None and child.text else None


def _sobject(notification) -> tuple[str, dict]:
    node = notification.find(f"{{{OUTBOUND_NS}}}sObject")
    if node is None:
        raise PayloadError("malformed_payload", "a Notification has no sObject")
    object_type = _local(node.get(f"{{{XSI_NS}}}type", "")).split(":")[-1]
    if not object_type:
        raise PayloadError("malformed_payload", "sObject has no xsi:type")
    record = {}
    for child in node:
        if len(child):          # relationship or compound value: not a field of this record
            continue
        nil = child.get(f"{{{XSI_NS}}}nil") == "true"
        record[_local(child.tag)] = None if nil else (child.text or "")
    return object_type, record


def parse(body: bytes) -> list[IncomingEvent]:
    root = _load(body)
    node = _notifications_element(root)
    org_id = _text(node, "OrganizationId")
    if not org_id:
        raise PayloadError("malformed_payload", "notifications has no OrganizationId")
    org_id = id18(org_id)
    items = node.findall(f"{{{OUTBOUND_NS}}}Notification")
    if not items:
        raise PayloadError("malformed_payload", "a message holds 1 to 100 notifications")
    if len(items) > MAX_NOTIFICATIONS:
        raise PayloadError("too_many_notifications", f"at most {MAX_NOTIFICATIONS} notifications per message")
    action_id = _text(node, "ActionId")
    # SessionId is a live API session when "Send Session ID" is on: it is never stored.
    return [_event(item, org_id, action_id) for item in items]


def _event(item, org_id: str, action_id: str | None) -> IncomingEvent:
    notification_id = _text(item, "Id")
    if not notification_id:
        raise PayloadError("malformed_payload", "a Notification has no Id")
    object_type, record = _sobject(item)
    if not record.get("Id"):
        raise PayloadError("malformed_payload", "an sObject has no Id")
    record["Id"] = id18(record["Id"])
    payload = {"organization_id": org_id, "action_id": action_id, "notification_id": notification_id,
               "object_type": object_type, "record": record}
    return IncomingEvent(source=SOURCE, kind=object_type,
                         dedupe_key=bounded_key(SOURCE, org_id, id18(notification_id)),
                         payload=payload, occurred_at=from_iso(record.get("LastModifiedDate")),
                         account_id=org_id)


def check_account(events: list[IncomingEvent], target) -> None:
    """Every notification must come from the org this URL was issued to."""
    if not target.account_id or not _ID.match(str(target.account_id).strip()):
        raise RoutingError("organization_not_configured", 403)
    for event in events:
        if not same_id(event.account_id, target.account_id):
            logger.info("outbound message from another org refused (connection %s...)", str(target.account_id)[:6])
            raise RoutingError("organization_mismatch", 403)


def respond(result, target) -> Response:
    """The SOAP ACK; routes calls this only after the notifications are committed."""
    return Response(ACK_ENVELOPE, status=200, content_type=ACK_CONTENT_TYPE)


# --- handlers: stored payload -> canonical changes ------------------------------------------------

def _custom_name(field_name: str) -> str:
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", field_name).lower()
    return CUSTOM_NAMES.get(field_name) or f"sf_{snake}"


def record_changes(object_type: str, record: dict) -> list[ContactChange]:
    """A Lead/Contact snapshot as canonical changes (also usable for records read by polling)."""
    field_map = FIELD_MAP[object_type]
    record_id = id18(record["Id"])
    fields, custom = {}, {}
    for name, value in record.items():
        if name in META_FIELDS or name in HUB_OWNED_FIELDS:
            continue
        if name in PLACEHOLDER_FIELDS and value == defaults.PLACEHOLDER:
            continue
        if name in field_map:
            fields.setdefault(field_map[name], value)
        else:
            custom[_custom_name(name)] = value
    changed_at = from_iso(record.get("LastModifiedDate"))
    modified_by = id18(record.get("LastModifiedById")) if record.get("LastModifiedById") else None
    changes = [ContactChange(system=SOURCE, external_id=record_id, object_type=object_type, fields=fields,
                             custom=custom, changed_at=changed_at, change_source=modified_by)]
    converted = record.get("ConvertedContactId")
    if object_type == "Lead" and str(record.get("IsConverted", "")).lower() == "true" and converted:
        # A converted Lead lives on as the Contact: its identity folds into the Contact's.
        changes.append(ContactChange(system=SOURCE, external_id=id18(converted), object_type="Contact",
                                     action="merge", merged_external_ids=[record_id], changed_at=changed_at,
                                     change_source=modified_by))
    return changes


def outbound_changes(payload: dict) -> list[ContactChange]:
    return record_changes(payload["object_type"], payload["record"])


def deleted_changes(payload: dict) -> list[ContactChange]:
    """A record polling found in the org's delete log (hub.sync.polling; Outbound Messages never fire
    on delete): the identity is unlinked, or the deletion propagated (hub.sync.decisions)."""
    return [ContactChange(system=SOURCE, external_id=id18(payload["id"]), object_type=payload["object_type"],
                          action="delete", changed_at=from_iso(payload.get("deletedDate")))]


DELETED_KIND = "deleted"
HANDLERS = {"Lead": outbound_changes, "Contact": outbound_changes, DELETED_KIND: deleted_changes}
