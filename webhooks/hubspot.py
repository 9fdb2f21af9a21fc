"""HubSpot app webhooks: signature v3 (v1/v2 legacy), batches of up to 100 contact events.

Signature precedence (DESIGN.md): a request with `X-HubSpot-Signature-v3` is judged by v3 alone.
v1 carries no timestamp, so a replayed v1 request is stopped by deduplication alone.
"""
from __future__ import annotations

import time

from hub.changes import ContactChange
from hub.exceptions import PayloadError, SignatureError, UnsupportedEventError
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
    if "%" not in uri:
        return uri
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
    headers = request.headers
    v3 = headers.get("X-HubSpot-Signature-v3")
    if v3:
        timestamp = require_header(request, "X-HubSpot-Request-Timestamp")
        check_timestamp(parse_int_header(timestamp) / 1000, now=time.time() if now is None else now)
        for uri in {decode_uri(public_uri), public_uri}:
            if signatures_match(v3_signature(secret, method, uri, body, timestamp.strip()), v3):
                return
        raise SignatureError("bad_signature")
    legacy = require_header(request, "X-HubSpot-Signature")
    version = (headers.get("X-HubSpot-Signature-Version") or "v1").lower()
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
    get = item.get
    parts = (get("portalId"), get("subscriptionId"), get("eventId"), get("occurredAt"),
             get("objectId", get("fromObjectId")))
    if None in parts:
        return "hubspot:" + ":".join("" if p is None else str(p) for p in parts)
    return "hubspot:%s:%s:%s:%s:%s" % parts       # the common case, without a generator per event


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


# --- what each event means for the canonical contact (applied by hub.sync.processing) ----------------

SYSTEM = "hubspot"
OBJECT_TYPE = "contact"

# HubSpot contact property -> canonical contact field; any other property goes to custom attributes.
PROPERTY_FIELDS = {
    "email": "email",
    "firstname": "first_name",
    "lastname": "last_name",
    "phone": "phone",
    "mobilephone": "mobile_phone",
    "company": "company",
    "jobtitle": "title",
    "country": "country",
    "state": "state",
    "city": "city",
    "website": "website",
    "numemployees": "company_size",
    "industry": "industry",
    "lifecyclestage": "lifecycle_stage",
    "hubspot_owner_id": "owner",        # an owner id; processing matches it to the owner's email
}

# Properties that carry consent: property -> (channel, whether a true value means granted).
CONSENT_PROPERTIES = {"hs_email_optout": ("email", False)}


def _object_id(value) -> str:
    if value in (None, ""):
        raise PayloadError("malformed_payload", "event has no objectId")
    return str(value)


def _base(item: dict, **values) -> ContactChange:
    return ContactChange(
        system=SYSTEM, external_id=_object_id(item.get("objectId")), object_type=OBJECT_TYPE,
        changed_at=from_epoch_ms(item.get("occurredAt")), change_source=item.get("changeSource"),
        source_id=None if item.get("sourceId") is None else str(item.get("sourceId")), **values)


def on_creation(item: dict) -> list[ContactChange]:
    """Only the id arrives: a contact shell with its identity; properties follow as propertyChange."""
    return [_base(item)]


def on_property_change(item: dict) -> list[ContactChange]:
    prop = item.get("propertyName")
    if not prop:
        raise PayloadError("malformed_payload", "propertyChange without propertyName")
    value = item.get("propertyValue")
    value = None if value == "" else value          # HubSpot sends "" when a property is cleared
    if prop in CONSENT_PROPERTIES:
        channel, true_means_granted = CONSENT_PROPERTIES[prop]
        flag = None if value is None else str(value).strip().lower() == "true"
        consent = {} if flag is None else {channel: flag if true_means_granted else not flag}
        return [_base(item, consent=consent, custom={prop: value})]
    field_name = PROPERTY_FIELDS.get(prop)
    if field_name is None:
        return [_base(item, custom={prop: value})]
    return [_base(item, fields={field_name: value})]


def on_snapshot(item: dict) -> list[ContactChange]:
    """A contact read by backfill or polling (stored by hub.sync.snapshots), not a webhook."""
    from hub.sync.snapshots import hubspot_snapshot_changes

    return hubspot_snapshot_changes(item)


def on_deletion(item: dict) -> list[ContactChange]:
    return [_base(item, action="delete")]


def on_restore(item: dict) -> list[ContactChange]:
    return [_base(item)]


def on_merge(item: dict) -> list[ContactChange]:
    """The surviving record may be a new id (newObjectId != primaryObjectId); merged ids stop existing."""
    primary = item.get("primaryObjectId", item.get("objectId"))
    change = _base({**item, "objectId": primary}, action="merge")
    change.merged_external_ids = [str(i) for i in item.get("mergedObjectIds") or () if i not in (None, "")]
    new_id = item.get("newObjectId")
    change.new_external_id = str(new_id) if new_id not in (None, "") and str(new_id) != str(primary) else None
    return [change]


def on_privacy_deletion(item: dict) -> list[ContactChange]:
    return [_base(item, action="erase")]


def on_association_change(item: dict) -> list[ContactChange]:
    """The primary company association is kept in custom attributes; other associations are not tracked."""
    if item.get("associationType") != "CONTACT_TO_COMPANY":
        raise UnsupportedEventError("association_not_tracked")
    if not item.get("isPrimaryAssociation"):
        raise UnsupportedEventError("non_primary_association")
    company_id = None if item.get("associationRemoved") else str(item.get("toObjectId"))
    return [_base({**item, "objectId": item.get("fromObjectId")}, custom={"hubspot_company_id": company_id})]


HANDLERS = {
    "contact.creation": on_creation,
    "contact.propertyChange": on_property_change,
    "contact.deletion": on_deletion,
    "contact.restore": on_restore,
    "contact.merge": on_merge,
    "contact.privacyDeletion": on_privacy_deletion,
    "contact.associationChange": on_association_change,
    "contact.snapshot": on_snapshot,
}
