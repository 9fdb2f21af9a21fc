"""Scheduling pushes of canonical changes to the connected CRMs (filled by the sync work)."""
from __future__ import annotations


def schedule_push(session, workspace_id: str, contact_id: str, changed_fields: set[str], origin: str) -> None:
    """Called by processing, in its transaction, after a contact's fields changed."""
    return None
