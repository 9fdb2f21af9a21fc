"""What processing asks of a workspace's set-up several times per event, read once per transaction:
the CRMs it has connected with their (non-secret) settings (echo markers, push targets) and its
field map (echo judgement, owner rules). Answers are kept in `session.info` for the life of the
transaction's session.
"""
from __future__ import annotations

from sqlalchemy import select

from hub.mappings import fields as field_map
from hub.models import Connection, Workspace

_CACHE_KEY = "hub.connected"
_MAPPING_KEY = "hub.mapping"


def connections(session, workspace_id: str) -> dict[str, dict]:
    """CRM kind -> Connection.settings for the workspace."""
    cache = session.info.setdefault(_CACHE_KEY, {})
    if workspace_id not in cache:
        cache[workspace_id] = {kind: settings or {} for kind, settings in session.execute(
            select(Connection.kind, Connection.settings).where(Connection.workspace_id == workspace_id))}
    return cache[workspace_id]


def settings_of(session, workspace_id: str, kind: str) -> dict:
    return connections(session, workspace_id).get(kind, {})


def workspace_mapping(session, workspace_id: str) -> field_map.Mapping:
    """The workspace's field map (defaults plus its `hub mapping` overrides)."""
    cache = session.info.setdefault(_MAPPING_KEY, {})
    if workspace_id not in cache:
        workspace = session.get(Workspace, workspace_id)
        cache[workspace_id] = field_map.load_mapping(workspace.settings if workspace else {})
    return cache[workspace_id]
