"""GDPR/CCPA erasure requests, from the REST API (`POST /api/v1/erasures`) and the CLI (`hub erase`).

The hub erases its own copy at once, in one transaction, as it does for a CRM's privacy deletion
(hub.sync.identity.erase_contact): personal fields, custom attributes, consent, CRM identities,
activity properties, pending pushes and the raw payloads of the person's events; only one-way hashes
of their identifiers are kept, so a late event does not bring them back. An email the hub does not
know is remembered too (a request may come before the person's data arrives). The CRMs keep their
own records: erase there with the CRM's tools (a HubSpot privacy deletion reaches the hub as an event).
Each request is recorded in sync_log (operation `erasure.requested`) without personal data.
"""
from __future__ import annotations

import logging
from typing import NamedTuple

from hub.db import transaction
from hub.exceptions import HubError
from hub.mappings import transforms
from hub.models import Contact, SyncLog
from hub.sync import identity

logger = logging.getLogger(__name__)


class UnknownContact(HubError):
    """The request names a contact id this workspace does not have."""


class Erased(NamedTuple):
    contact_id: str | None          # the contact erased, None when the hub knew nobody by that email
    subjects_remembered: int        # one-way hashes kept (email, CRM ids)


def erase_person(runtime, workspace_id: str, email: str | None = None, contact_id: str | None = None) -> Erased:
    """Erase the person named by exactly one of `email` (normalised here) and `contact_id`.

    Raises InvalidValueError for a malformed email and UnknownContact for an id not in the workspace."""
    if (email is None) == (contact_id is None):
        raise ValueError("give exactly one of email and contact_id")
    email = transforms.email(email) if email is not None else None
    with transaction(runtime.engine) as session:
        contact = _subject(session, workspace_id, email, contact_id)
        subjects = {identity.email_subject(email)} if email else set()
        if contact is not None:
            subjects |= identity.erase_contact(session, contact, keep_event_id=None)
        identity.record_erasure(session, workspace_id, subjects)
        session.add(SyncLog(workspace_id=workspace_id, target="hub", operation="erasure.requested",
                            object_ids=[contact.id] if contact is not None else [], status="decision"))
    erased = Erased(contact.id if contact is not None else None, len(subjects))
    logger.info("erasure request in workspace %s: contact %s erased, %s subject hash(es) kept", workspace_id,
                erased.contact_id or "(none known)", erased.subjects_remembered)
    return erased


def _subject(session, workspace_id: str, email: str | None, contact_id: str | None) -> Contact | None:
    if contact_id is not None:
        contact = identity.lock_contact(session, contact_id) if len(contact_id) <= 32 else None
        if contact is None or contact.workspace_id != workspace_id:
            raise UnknownContact(f"no contact {contact_id} in this workspace")
        return contact
    return identity.by_email(session, workspace_id, email)
