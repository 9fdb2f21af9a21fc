"""Sync decisions on CRM merges and deletions, each logged in sync_log with status "decision".

Processing applies them (hub.sync.processing: a merge merges identities; a deletion unlinks the
identity and leaves the canonical contact) and calls these functions in its transaction:

- `record_merge`: which CRM ids now point at which canonical contact.
- `record_email_change`: a linked contact's email changes to one another contact holds. When both
  have records in the same CRM they are two people as far as that CRM knows (or a duplicate an admin
  must merge there): nothing is merged, the email is not taken and the conflict is logged
  ("email.conflict"); a CRM merge of the two records merges the contacts. Otherwise the two are one
  person (the email is the identity key) and they are merged ("email.merge").
- `record_deletion`: the workspace's policy (`hub sync set --deletions`, hub.sync.settings): "unlink"
  (default: the record in the other CRM stays, the deleted id is unlinked) or "propagate" (the linked
  records in the other CRM are deleted too: hub.sync.deletions). `record_deletion_echo`: the CRM
  reports a deletion the hub made; nothing more happens.
"""
from __future__ import annotations

import logging

from sqlalchemy import select

from hub.logs import mask_email
from hub.models import Identity, SyncLog, Workspace
from hub.sync import deletions
from hub.sync.settings import sync_settings

logger = logging.getLogger(__name__)

CRM_SYSTEMS = ("hubspot", "salesforce")


def deletion_policy(session, workspace_id: str) -> str:
    workspace = session.get(Workspace, workspace_id)
    return sync_settings(workspace.settings if workspace else None).deletions


def record_deletion(session, workspace_id: str, system: str, external_id: str, contact_id: str | None) -> str:
    """Log what the hub does about a CRM deletion, and start it; returns the decision."""
    policy = deletion_policy(session, workspace_id)
    others = []
    if contact_id is not None:
        others = session.execute(select(Identity.system, Identity.external_id, Identity.object_type).where(
            Identity.workspace_id == workspace_id, Identity.contact_id == contact_id,
            Identity.system != system, Identity.system.in_(CRM_SYSTEMS))).all()
    if policy == "propagate" and others:
        decision = "propagate"
        detail = "deleting " + ", ".join(f"{s}:{i}" for s, i, _ in others) + " (unlinked now; the delete is queued)"
        deletions.schedule(session, workspace_id, contact_id, [deletions.Target(s, i, t) for s, i, t in others])
    else:
        decision = "unlink"
        detail = "identity unlinked; the canonical contact and the other CRM's record stay"
    _log_deletion(session, workspace_id, system, external_id, contact_id, decision, detail)
    logger.info("deletion of %s %s: %s", system, external_id, decision)
    return decision


def record_deletion_echo(session, workspace_id: str, system: str, external_id: str) -> None:
    """The CRM reports a deletion the hub made (propagated): nothing more to do."""
    _log_deletion(session, workspace_id, system, external_id, None, "echo",
                  "the hub deleted this record (propagated deletion): no further write")


def _log_deletion(session, workspace_id: str, system: str, external_id: str, contact_id: str | None,
                  decision: str, detail: str) -> None:
    session.add(SyncLog(workspace_id=workspace_id, target=system, operation=f"deletion.{decision}",
                        object_ids=[external_id] + ([contact_id] if contact_id else []), status="decision",
                        error=detail))


def record_merge(session, workspace_id: str, system: str, survivor_contact_id: str, external_ids: list[str]) -> None:
    session.add(SyncLog(workspace_id=workspace_id, target=system, operation="merge.identities",
                        object_ids=list(external_ids) + [survivor_contact_id], status="decision",
                        error=f"{len(external_ids)} {system} record(s) now identify contact {survivor_contact_id}"))


def crm_systems(session, contact_id: str) -> set[str]:
    return set(session.scalars(select(Identity.system).where(
        Identity.contact_id == contact_id, Identity.system.in_(CRM_SYSTEMS))))


def record_email_change(session, workspace_id: str, system: str, external_id: str | None, contact_id: str,
                        holder_id: str, email: str) -> bool:
    """Decide whether `contact_id` takes `email` from `holder_id` (merging them); logged either way."""
    shared = sorted(crm_systems(session, contact_id) & crm_systems(session, holder_id))
    ids = [i for i in (external_id, contact_id, holder_id) if i]
    if shared:
        session.add(SyncLog(workspace_id=workspace_id, target=system, operation="email.conflict", object_ids=ids,
                            status="decision", error=(
                                f"{system} {external_id or ''} changed its email to {mask_email(email)}, which "
                                f"contact {holder_id} has; both have records in {', '.join(shared)}: not merged, "
                                f"the email is not taken (merge the two records in the CRM to merge them here)")))
        logger.warning("email change of contact %s refused: %s belongs to contact %s", contact_id,
                       mask_email(email), holder_id)
        return False
    session.add(SyncLog(workspace_id=workspace_id, target=system, operation="email.merge", object_ids=ids,
                        status="decision", error=f"contact {holder_id} had {mask_email(email)} and no record in "
                                                 f"a CRM of contact {contact_id}: merged into it"))
    return True
