"""Where a workspace's notices go (Slack or email), and sending one; a log line when none is set.

The channel's settings are validated by the kind's marshmallow schema and stored encrypted (one
Fernet token) in `workspace.settings["notice"]`; they are only decrypted to send (or to show them,
secrets masked). `hub notice set|show|test` (hub.rules.notice_cli) is the admin's way in.
"""
from __future__ import annotations

import logging

from marshmallow import ValidationError

from hub.connectors.notice import Notice, notice_kinds
from hub.db import transaction
from hub.exceptions import FatalError
from hub.logs import mask
from hub.models import Workspace

logger = logging.getLogger(__name__)

SETTINGS_KEY = "notice"
NOTICE_KINDS = ("email", "slack")       # the kinds that reach sales; sms and webhook are for contacts (hub.rules.messages)


def kind_class(kind: str, allowed: tuple[str, ...] = NOTICE_KINDS, what: str = "notice kind"):
    """The registered NoticeKind class for `kind` (FatalError UNKNOWN_KIND unless it is `allowed`)."""
    kinds = notice_kinds()
    if kind not in kinds or kind not in allowed:
        raise FatalError(f"unknown {what} {kind}; one of {', '.join(sorted(allowed))}", code="UNKNOWN_KIND")
    return kinds[kind]


def workspace_settings(runtime, workspace_id: str, must_exist: bool = True) -> dict:
    """A copy of the workspace's settings ({} for no workspace unless it `must_exist`: FatalError NOT_FOUND)."""
    with transaction(runtime.engine) as session:
        workspace = session.get(Workspace, workspace_id)
        if workspace is None and must_exist:
            raise FatalError(f"no workspace {workspace_id}", code="NOT_FOUND")
        return dict((workspace.settings or {}) if workspace else {})


def update_workspace_settings(runtime, workspace_id: str, change) -> None:
    """Replace the workspace's settings with `change(copy of them)` in one transaction (FatalError NOT_FOUND)."""
    with transaction(runtime.engine) as session:
        workspace = session.get(Workspace, workspace_id)
        if workspace is None:
            raise FatalError(f"no workspace {workspace_id}", code="NOT_FOUND")
        workspace.settings = change(dict(workspace.settings or {}))


def stored_channel(runtime, kind: type, token: str):
    """A channel built from its stored (encrypted) settings; settings that no longer validate are a FatalError
    naming the settings, never their values (a worker must not crash on them)."""
    try:
        return kind(runtime.vault.decrypt_json(token))
    except ValidationError as exc:
        raise FatalError(f"stored {kind.kind} settings invalid: {sorted(exc.messages)}", code="BAD_SETTINGS") from None


def configure_notice(runtime, workspace_id: str, kind: str, settings: dict) -> dict:
    """Validate and store the channel; returns the settings with secrets masked.

    Raises FatalError (unknown kind, no workspace) or marshmallow.ValidationError (bad settings,
    messages keyed by setting name); nothing is stored then.
    """
    channel_kind = kind_class(kind)
    validated = channel_kind(settings).settings
    entry = {"kind": kind, "settings": runtime.vault.encrypt(validated)}
    update_workspace_settings(runtime, workspace_id, lambda stored: {**stored, SETTINGS_KEY: entry})
    return channel_kind.masked_settings(validated)


def _stored_entry(runtime, workspace_id: str, must_exist: bool = False) -> dict | None:
    return workspace_settings(runtime, workspace_id, must_exist).get(SETTINGS_KEY)


def channel_for(runtime, workspace_id: str):
    """The workspace's NoticeKind instance, or None when no channel is configured."""
    entry = _stored_entry(runtime, workspace_id)
    if not entry:
        return None
    return stored_channel(runtime, kind_class(entry["kind"]), entry["settings"])


def show_notice(runtime, workspace_id: str) -> dict:
    """{"kind": ..., "settings": {...secrets masked}}; kind None (notices are logged) when none is set."""
    entry = _stored_entry(runtime, workspace_id, must_exist=True)
    if not entry:
        return {"kind": None, "settings": {}}
    kind = kind_class(entry["kind"])
    return {"kind": kind.kind, "settings": kind.masked_settings(runtime.vault.decrypt_json(entry["settings"]))}


def send_notice(runtime, workspace_id: str, notice: Notice) -> str:
    """Send through the configured channel; returns its kind, or "log" when there is none."""
    channel = channel_for(runtime, workspace_id)
    if channel is None:
        logger.info("notice (no channel configured) workspace=%s: %s - %s", workspace_id, notice.subject,
                    mask(notice.text))
        return "log"
    channel.send(notice)
    logger.info("notice sent via %s workspace=%s: %s", channel.kind, workspace_id, notice.subject)
    return channel.kind
