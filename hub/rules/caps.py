"""Frequency caps on messages to contacts: the per-workspace setting and the race-safe claim.

A workspace sends at most `max` messages to one contact per channel within `days` days (default
MESSAGE_CAP_MAX per MESSAGE_CAP_DAYS), set by `hub notice cap` in workspace.settings["message_caps"].
What counts is read from lead_effect rows of kind "message" for that contact: done ones whose result
says {"sent": channel} with done_at inside the window, and in-flight ones (pending, result
{"sending": channel}: claimed by a worker, being sent or waiting for a retry).

Race safety: `claim` first writes its own claim (on SQLite that write takes the database's write
lock, so claims run one after another), then locks the contact row FOR UPDATE (PostgreSQL: one
claimer per contact at a time), counts, and keeps or withdraws its claim in that same transaction.
Two workers messaging one contact at once therefore see each other's claim; the send itself happens
after the commit, with no lock held.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select

from hub import defaults
from hub.db import transaction
from hub.exceptions import FatalError
from hub.models import LeadEffect, Workspace
from hub.rules.notices import update_workspace_settings
from hub.rules.segments import MESSAGE_CHANNELS
from hub.sync.identity import lock_contact

SETTINGS_KEY = "message_caps"
MAX_RANGE = (1, 1000)
DAYS_RANGE = (1, 365)


@dataclass(frozen=True)
class Cap:
    max: int = defaults.MESSAGE_CAP_MAX
    days: int = defaults.MESSAGE_CAP_DAYS

    def as_dict(self) -> dict:
        return {"max": self.max, "days": self.days}


def cap_for(workspace_settings: dict | None, channel: str) -> Cap:
    """The channel's cap from a workspace's settings (the default when none is set)."""
    entry = ((workspace_settings or {}).get(SETTINGS_KEY) or {}).get(channel)
    return Cap(int(entry["max"]), int(entry["days"])) if entry else Cap()


def caps_of(workspace_settings: dict | None) -> dict[str, dict]:
    """Every channel's cap, for `hub notice show`."""
    return {channel: cap_for(workspace_settings, channel).as_dict() for channel in MESSAGE_CHANNELS}


def set_cap(runtime, workspace_id: str, channel: str, max_messages: int, days: int) -> dict:
    """Store a channel's cap; returns {"channel", "max", "days"}. FatalError for bad values (nothing stored)."""
    if channel not in MESSAGE_CHANNELS:
        raise FatalError(f"unknown channel {channel}; one of {', '.join(MESSAGE_CHANNELS)}", code="UNKNOWN_CHANNEL")
    if not (MAX_RANGE[0] <= max_messages <= MAX_RANGE[1] and DAYS_RANGE[0] <= days <= DAYS_RANGE[1]):
        raise FatalError(f"a cap is {MAX_RANGE[0]}-{MAX_RANGE[1]} messages per {DAYS_RANGE[0]}-{DAYS_RANGE[1]} days",
                         code="BAD_CAP")
    cap = {"max": max_messages, "days": days}
    update_workspace_settings(runtime, workspace_id, lambda stored: {
        **stored, SETTINGS_KEY: {**(stored.get(SETTINGS_KEY) or {}), channel: cap}})
    return {"channel": channel, "max": max_messages, "days": days}


def used(session, contact_id: str, channel: str, since: datetime, exclude_effect_id: int | None = None) -> int:
    """Messages on `channel` sent to the contact since `since`, plus the ones in flight."""
    query = select(LeadEffect.id, LeadEffect.status, LeadEffect.result).where(
        LeadEffect.contact_id == contact_id, LeadEffect.kind == "message",
        or_(and_(LeadEffect.status == "done", LeadEffect.done_at >= since), LeadEffect.status == "pending"))
    if exclude_effect_id is not None:
        query = query.where(LeadEffect.id != exclude_effect_id)
    key = {"done": "sent", "pending": "sending"}
    return sum(1 for _, status, result in session.execute(query)
               if (result or {}).get(key[status]) == channel)


def claim(runtime, effect_id: int, contact_id: str, channel: str, now: datetime) -> bool:
    """Reserve one message on `channel` for the effect if the cap allows it (see the module docstring)."""
    with transaction(runtime.engine) as session:
        effect = session.get(LeadEffect, effect_id)
        effect.result = {"sending": channel}
        session.flush()                                  # SQLite: this write serialises the claimers
        lock_contact(session, contact_id)                # PostgreSQL: so does this row lock
        workspace = session.get(Workspace, effect.workspace_id)
        cap = cap_for(workspace.settings if workspace else None, channel)
        if used(session, contact_id, channel, now - timedelta(days=cap.days), exclude_effect_id=effect_id) >= cap.max:
            effect.result = {}
            return False
        return True
