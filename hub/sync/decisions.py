"""Sync decisions on CRM merges and deletions, each logged in sync_log with status "decision".

Processing applies them (hub.sync.processing: a merge merges identities; a deletion unlinks the
identity and leaves the canonical contact) and calls these functions in its transaction:

- `record_merge`: which CRM ids now point at which canonical contact.
- `record_deletion`: the workspace's policy, `Workspace.settings["deletions"]`: "unlink" (default:
  the record in the other CRM stays, the deleted id is unlinked) or "propagate" (the person is also
  to be deleted in the other CRM). The connectors expose no delete call yet, so "propagate" is
  logged as a decision naming the records to delete and nothing is deleted automatically.
"""
from __future__ import annotations

import logging

from sqlalchemy import select

from hub.models import Identity, SyncLog, Workspace

logger = logging.getLogger(__name__)

DELETION_POLICIES = ("unlink", "propagate")


def deletion_policy(session, workspace_id: str) -> str:
    workspace = session.get(Workspace, workspace_id)
    policy = ((workspace.settings or {}) if workspace else {}).get("deletions", "unlink")
    return policy if policy in DELETION_POLICIES else "unlink"


def record_deletion(session, workspace_id: str, system: str, external_id: str, contact_id: str | None) -> str:
    """Log what the hub does about a CRM deletion; returns the decision."""
    policy = deletion_policy(session, workspace_id)
    others = []
    if contact_id is not None:
        others = session.execute(select(Identity.system, Identity.external_id).where(
            Identity.workspace_id == workspace_id, Identity.contact_id == contact_id,
            Identity.system != system, Identity.system.in_(("hubspot", "salesforce")))).all()
    if policy == "propagate" and others:
        decision = "propagate"
        detail = ("delete requested for " + ", ".join(f"{s}:{i}" for s, i in others)
                  + " (no connector delete call: left for an operator)")
    else:
        decision = "unlink"
        detail = "identity unlinked; the canonical contact and the other CRM's record stay"
    session.add(SyncLog(workspace_id=workspace_id, target=system, operation=f"deletion.{decision}",
                        object_ids=[external_id] + ([contact_id] if contact_id else []), status="decision",
                        error=detail))
    logger.info("deletion of %s %s: %s", system, external_id, decision)
    return decision


def record_merge(session, workspace_id: str, system: str, survivor_contact_id: str, external_ids: list[str]) -> None:
    session.add(SyncLog(workspace_id=workspace_id, target=system, operation="merge.identities",
                        object_ids=list(external_ids) + [survivor_contact_id], status="decision",
                        error=f"{len(external_ids)} {system} record(s) now identify contact {survivor_contact_id}"))
