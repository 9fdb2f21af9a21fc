"""The CRMs a workspace has connected and their (non-secret) settings, read once per transaction.

Processing asks for them several times per event (echo markers, owner rules, push targets); the
answer is kept in `session.info` for the life of the transaction's session.
"""
from __future__ import annotations

from sqlalchemy import select

from hub.models import Connection

_CACHE_KEY = "hub.connected"


def connections(session, workspace_id: str) -> dict[str, dict]:
    """CRM kind -> Connection.settings for the workspace."""
    cache = session.info.setdefault(_CACHE_KEY, {})
    if workspace_id not in cache:
        cache[workspace_id] = {kind: settings or {} for kind, settings in session.execute(
            select(Connection.kind, Connection.settings).where(Connection.workspace_id == workspace_id))}
    return cache[workspace_id]


def settings_of(session, workspace_id: str, kind: str) -> dict:
    return connections(session, workspace_id).get(kind, {})
