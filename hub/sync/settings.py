"""Reading and changing a workspace's sync settings: the field map overrides (`hub mapping`) and the
sync options (`hub sync`), kept in `Workspace.settings["sync"]`:

- `deletions`: "unlink" (default: a CRM deletion unlinks that record; the other CRM's record stays)
  or "propagate" (the linked record in the other CRM is deleted too; hub.sync.deletions).
- `create_segment`: when set, the hub creates records in a CRM only for contacts in this segment
  (like HubSpot's inclusion list); linked contacts keep syncing. Unset: every contact with an email.
- `create`: False turns creation off entirely (linked contacts keep syncing).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from hub.admin import AdminError
from hub.db import transaction
from hub.mappings import fields as field_map
from hub.models import Workspace

DELETION_POLICIES = ("unlink", "propagate")
SEGMENT_NAME_MAX = 100            # SegmentMembership.segment


@dataclass(frozen=True)
class SyncSettings:
    deletions: str = "unlink"
    create: bool = True
    create_segment: str | None = None


def sync_settings(workspace_settings: dict | None) -> SyncSettings:
    """The workspace's sync options (a `deletions` key at the top level is the older place for it)."""
    stored = dict((workspace_settings or {}).get("sync") or {})
    deletions = stored.get("deletions", (workspace_settings or {}).get("deletions", "unlink"))
    return SyncSettings(deletions=deletions if deletions in DELETION_POLICIES else "unlink",
                        create=bool(stored.get("create", True)), create_segment=stored.get("create_segment") or None)


def validate(changes: dict) -> dict:
    """Checked values of `changes` (deletions / create / create_segment); ValueError names the bad one."""
    checked = {}
    if "deletions" in changes:
        if changes["deletions"] not in DELETION_POLICIES:
            raise ValueError(f"deletions must be one of {', '.join(DELETION_POLICIES)}")
        checked["deletions"] = changes["deletions"]
    if "create" in changes:
        if not isinstance(changes["create"], bool):
            raise ValueError("create must be true or false")
        checked["create"] = changes["create"]
    if "create_segment" in changes:
        segment = (changes["create_segment"] or "").strip() or None
        if segment is not None and len(segment) > SEGMENT_NAME_MAX:
            raise ValueError(f"create_segment is longer than {SEGMENT_NAME_MAX} characters")
        checked["create_segment"] = segment
    return checked


def _workspace(session, workspace_id: str) -> Workspace:
    workspace = session.get(Workspace, workspace_id)
    if workspace is None:
        raise AdminError(f"no workspace {workspace_id}")
    return workspace


def show_sync(runtime, workspace_id: str) -> dict:
    with transaction(runtime.engine) as session:
        return asdict(sync_settings(_workspace(session, workspace_id).settings))


def set_sync(runtime, workspace_id: str, **changes) -> dict:
    """Change sync options (validated before anything is written); returns them all."""
    checked = validate(changes)
    with transaction(runtime.engine) as session:
        workspace = _workspace(session, workspace_id)
        settings = dict(workspace.settings or {})
        current = asdict(sync_settings(settings))
        settings["sync"] = {**current, **checked}
        settings.pop("deletions", None)                       # now kept under "sync"
        workspace.settings = settings
        return asdict(sync_settings(settings))


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


def entered_create_segment(session, workspace_id: str, entered: list[str]) -> bool:
    """The contact just entered the workspace's create segment (the push then creates its records)."""
    if not entered:
        return False
    segment = sync_settings(_workspace(session, workspace_id).settings).create_segment
    return segment is not None and segment in entered
