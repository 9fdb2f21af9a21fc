"""Scheduling lead-rule evaluation after a contact or its activities changed (filled by the rules work)."""
from __future__ import annotations


def schedule_evaluation(session, workspace_id: str, contact_id: str) -> None:
    """Called by processing, in its transaction, after a contact or its activities changed."""
    return None
