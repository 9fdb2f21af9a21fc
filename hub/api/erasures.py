"""GDPR/CCPA erasure requests: `POST /erasures` with `{"email": ..}` or `{"contact_id": ..}`.

The hub erases its own copy at once, in one transaction, as it does for a CRM's privacy deletion
(hub.sync.identity.erase_contact): personal fields, custom attributes, consent, CRM identities,
activity properties and the raw payloads of the person's events; only one-way hashes of their
identifiers are kept, so a late event does not bring them back. An email the hub does not know is
remembered too (a request may come before the person's data arrives). The CRMs keep their own
records: erase there with the CRM's tools (a HubSpot privacy deletion reaches the hub as an event).
The request is recorded in sync_log (operation `erasure.requested`) without personal data.
"""
from __future__ import annotations

import logging

from flask import g, jsonify
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from hub.api import Problem, bp, json_body, validated
from hub.api.contacts import normalised_email
from hub.db import transaction
from hub.models import Contact, SyncLog
from hub.runtime import current_runtime
from hub.sync import identity

logger = logging.getLogger(__name__)


class ErasureRequest(Schema):
    email = fields.String(load_default=None, validate=validate.Length(min=1, max=320))
    contact_id = fields.String(load_default=None, validate=validate.Length(min=1, max=32))

    @validates_schema
    def _exactly_one(self, data, **_kwargs):
        if (data.get("email") is None) == (data.get("contact_id") is None):
            raise ValidationError("give exactly one of email and contact_id")


def _subject_contact(session, workspace_id: str, wanted: dict) -> Contact | None:
    if wanted["contact_id"] is not None:
        contact = identity.lock_contact(session, wanted["contact_id"])
        if contact is None or contact.workspace_id != workspace_id:
            raise Problem(404, "contact_not_found", f"no contact {wanted['contact_id']} in this workspace")
        return contact
    return identity.by_email(session, workspace_id, wanted["email"])


def erase(session, workspace_id: str, wanted: dict) -> tuple[str | None, int]:
    """Erase the person the request names; returns (erased contact id or None, subjects remembered)."""
    contact = _subject_contact(session, workspace_id, wanted)
    subjects = {identity.email_subject(wanted["email"])} if wanted["email"] else set()
    if contact is not None:
        subjects |= identity.erase_contact(session, contact, keep_event_id=None)
    identity.record_erasure(session, workspace_id, subjects)
    session.add(SyncLog(workspace_id=workspace_id, target="hub", operation="erasure.requested",
                        object_ids=[contact.id] if contact is not None else [], status="decision"))
    return (contact.id if contact is not None else None), len(subjects)


@bp.post("/erasures")
def request_erasure():
    wanted = validated(ErasureRequest(), json_body())
    if wanted["email"] is not None:
        wanted["email"] = normalised_email(wanted["email"])
    with transaction(current_runtime().engine) as session:
        contact_id, remembered = erase(session, g.workspace_id, wanted)
    logger.info("erasure request: contact %s erased, %s subject hash(es) kept", contact_id or "(none known)",
                remembered)
    return jsonify({"erased_contact_id": contact_id, "subjects_remembered": remembered})
