"""Helpers for the processing tests: post signed HubSpot fixtures, read canonical contacts back."""
from __future__ import annotations

import copy
import json

from sqlalchemy import func, select

from hub.db import transaction
from hub.models import Activity, Contact, Erasure, Event, Identity
from tests.conftest import HUBSPOT_APP_SECRET, fixture_json, run_pipeline
from hub.sandbox.signing import hubspot_v3_headers

URL = "http://localhost/webhooks/hubspot"


def hubspot_items(name: str, index: int | None = None, **overrides) -> list[dict]:
    """Events of fixture `hubspot/<name>.json` (one of them with `index`), with fields overridden."""
    items = copy.deepcopy(fixture_json(f"hubspot/{name}.json"))
    if index is not None:
        items = [items[index]]
    return [{**item, **overrides} for item in items]


def deliver(client, items: list[dict]) -> dict:
    body = json.dumps(items).encode()
    response = client.post("/webhooks/hubspot", data=body, headers=hubspot_v3_headers(HUBSPOT_APP_SECRET, "POST", URL, body))
    assert response.status_code == 200, response.json
    return response.json


def deliver_and_run(client, runtime, items: list[dict]) -> dict:
    answer = deliver(client, items)
    run_pipeline(runtime)
    return answer


def process_now(runtime, event_id: int) -> str:
    """Run one event through jobs.process_one in this thread; its outcome ("processed", "skipped", ...)."""
    from hub.sync import jobs

    result = jobs.process_one(runtime, event_id)
    return result[0] if isinstance(result, tuple) else result     # (outcome, retry_after) once jobs.py returns both


def contact_of(runtime, workspace_id: str, system: str, external_id) -> Contact | None:
    with transaction(runtime.engine) as session:
        return session.scalar(select(Contact).join(Identity, Identity.contact_id == Contact.id).where(
            Identity.workspace_id == workspace_id, Identity.system == system,
            Identity.external_id == str(external_id)))


def contacts(runtime, workspace_id: str) -> list[Contact]:
    with transaction(runtime.engine) as session:
        return list(session.scalars(select(Contact).where(Contact.workspace_id == workspace_id).order_by(Contact.created_at)))


def identities(runtime, contact_id: str) -> set[tuple[str, str]]:
    with transaction(runtime.engine) as session:
        rows = session.execute(select(Identity.system, Identity.external_id).where(Identity.contact_id == contact_id))
        return {(system, external_id) for system, external_id in rows}


def events(runtime) -> list[Event]:
    with transaction(runtime.engine) as session:
        return list(session.scalars(select(Event).order_by(Event.id)))


def count(runtime, model) -> int:
    with transaction(runtime.engine) as session:
        return session.scalar(select(func.count()).select_from(model))


def snapshot(runtime, workspace_id: str) -> list[tuple]:
    """Everything processing writes, comparable before and after a redelivery."""
    rows = []
    for contact in contacts(runtime, workspace_id):
        rows.append((contact.id, contact.email, contact.phone, contact.first_name, contact.last_name,
                     contact.country, contact.custom, contact.consent, contact.field_updated_at,
                     sorted(identities(runtime, contact.id))))
    return rows + [("activities", count(runtime, Activity)), ("erasures", count(runtime, Erasure))]
