"""Helpers for the form/shop/Salesforce receiver tests: sources, stored rows, handler output."""
from __future__ import annotations

from dataclasses import asdict
from urllib.parse import urlsplit

from sqlalchemy import func, select

from hub import admin
from hub.db import transaction
from hub.models import Event, Outbox


def add_source(runtime, workspace: dict, kind: str, secret: str | None, settings: dict | None = None) -> str:
    """Create a source; returns the path its webhook URL names (what the vendor posts to)."""
    created = admin.add_source(runtime, workspace["workspace_id"], kind, secret, settings)
    return urlsplit(created["webhook_url"]).path


def count(runtime, model=Event) -> int:
    with transaction(runtime.engine) as session:
        return session.scalar(select(func.count()).select_from(model))


def rows(runtime) -> list[Event]:
    with transaction(runtime.engine) as session:
        found = session.scalars(select(Event).order_by(Event.id)).all()
        session.expunge_all()
        return list(found)


def nothing_stored(runtime) -> bool:
    return count(runtime, Event) == 0 and count(runtime, Outbox) == 0


def handled(module, event: Event) -> list[dict]:
    """What the module's HANDLERS make of a STORED event, as plain dicts (compared in tests)."""
    return [asdict(change) for change in module.HANDLERS[event.kind](event.payload)]


def change(**values) -> dict:
    """An expected ContactChange as a dict, with the dataclass defaults filled in."""
    from hub.changes import ActivitySpec, ContactChange

    activity = values.pop("activity", None)
    if isinstance(activity, dict):
        activity = ActivitySpec(**activity)
    return asdict(ContactChange(activity=activity, **values))
