"""Reading and changing a workspace's sync settings: the field map overrides (`hub mapping`)."""
from __future__ import annotations

from hub.admin import AdminError
from hub.db import transaction
from hub.mappings import fields as field_map
from hub.models import Workspace


def _workspace(session, workspace_id: str) -> Workspace:
    workspace = session.get(Workspace, workspace_id)
    if workspace is None:
        raise AdminError(f"no workspace {workspace_id}")
    return workspace


def workspace_mapping(runtime, workspace_id: str) -> list[dict]:
    with transaction(runtime.engine) as session:
        return field_map.describe(field_map.load_mapping(_workspace(session, workspace_id).settings))


def set_direction(runtime, workspace_id: str, field_name: str, direction: str, crm: str | None) -> dict:
    """Override one field's direction (validated); returns the field's new row."""
    with transaction(runtime.engine) as session:
        workspace = _workspace(session, workspace_id)
        workspace.settings = field_map.set_override(workspace.settings or {}, field_name, direction, crm)
        mapping = field_map.load_mapping(workspace.settings)
    row = next(r for r in field_map.describe(mapping) if r["field"] == field_name)
    return {"field": row["field"], "direction": row["direction"], "crm": row["crm"] or ""}
