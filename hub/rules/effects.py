"""Running lead effects (what segment triggers decided), each at most once, by a dispatch table.

An effect row is read, its handler runs outside any long transaction (handlers keep their own
progress, see hub.rules.handoff), then the row is settled: done, or pending again after a backoff
for a RetriableError (up to RULES_EFFECT_MAX_ATTEMPTS), or failed for a FatalError.
"""
from __future__ import annotations

import logging
import re
from datetime import timedelta

from sqlalchemy import select

from hub import defaults
from hub.changes import CONTACT_FIELDS
from hub.connectors.notice import Notice
from hub.db import transaction
from hub.exceptions import FatalError, RetriableError
from hub.models import Contact, LeadEffect, Outbox, utcnow
from hub.rules.handoff import run_handoff
from hub.rules.mql import forward_lifecycle
from hub.rules.messages import deliver
from hub.rules.notices import send_notice

logger = logging.getLogger(__name__)

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
TEMPLATE_NAMES = ("score", "grade", "first_name", "last_name", "company", "title", "segment", "owner")


def render(template: str, contact: Contact, segment: str) -> str:
    """Fill {score}, {grade}, {first_name}... (plain names only: no attribute or index access)."""
    values = {name: getattr(contact, name, None) for name in TEMPLATE_NAMES if name != "segment"}
    values["segment"] = segment
    return _PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), m.group(0)) if values.get(m.group(1)) is not None
                                          else ""), template)


def _contact(runtime, effect: LeadEffect) -> Contact:
    with transaction(runtime.engine) as session:
        contact = session.get(Contact, effect.contact_id)
        if contact is None:
            raise FatalError("contact is gone", code="NOT_FOUND")
        session.expunge(contact)
        return contact


def run_notice(runtime, effect: LeadEffect) -> dict:
    contact = _contact(runtime, effect)
    segment = effect.params.get("segment", "")
    text = render(effect.params.get("text") or "{first_name} {last_name} {segment}", contact, segment)
    channel = send_notice(runtime, effect.workspace_id, Notice(
        subject=f"Lead {'entered' if effect.params.get('on') == 'enter' else 'left'} {segment}", text=text,
        idempotency_key=effect.idempotency_key))
    return {"channel": channel}


def run_crm_update(runtime, effect: LeadEffect) -> dict:
    """Set canonical fields (`params.fields`); the sync push writes them to the CRMs."""
    from hub.sync.push import schedule_push

    fields = dict(effect.params.get("fields") or {})
    unknown = set(fields) - set(CONTACT_FIELDS)
    if unknown:
        raise FatalError(f"crm_update names unknown fields {sorted(unknown)}", code="UNKNOWN_FIELD")
    with transaction(runtime.engine) as session:
        contact = session.get(Contact, effect.contact_id)
        if "lifecycle_stage" in fields:
            stage = forward_lifecycle(contact.lifecycle_stage, fields["lifecycle_stage"])
            if stage is None:
                fields.pop("lifecycle_stage")     # never backwards
        changed = {name for name, value in fields.items() if getattr(contact, name) != value}
        for name in changed:
            setattr(contact, name, fields[name])
        if changed:
            schedule_push(session, effect.workspace_id, contact.id, changed, "rules")
    return {"changed": sorted(changed)}


def run_message(runtime, effect: LeadEffect) -> dict:
    """A message to the contact on `params.channel` (email, sms, webhook), if consent and the cap allow."""
    contact = _contact(runtime, effect)
    segment = effect.params.get("segment", "")
    return deliver(runtime, effect, contact,
                   subject=render(effect.params.get("subject") or "Hello {first_name}", contact, segment),
                   text=render(effect.params.get("text") or "", contact, segment))


EFFECTS = {
    "handoff": run_handoff,
    "notice": run_notice,
    "crm_update": run_crm_update,
    "message": run_message,
}


def run_effects(runtime, effect_ids: list[int]) -> dict:
    """Run the pending effects among `effect_ids`; returns counts; re-arms itself for retries."""
    counts = {"done": 0, "retry": 0, "failed": 0, "skipped": 0}
    retry_at = None
    for effect_id in effect_ids:
        with transaction(runtime.engine) as session:
            effect = session.get(LeadEffect, effect_id)
            if effect is None or effect.status != "pending":
                counts["skipped"] += 1
                continue
            session.expunge(effect)
        outcome, wait = _run_one(runtime, effect)
        counts[outcome] += 1
        if outcome == "retry":
            retry_at = min(retry_at or wait, wait)
    pending = _still_pending(runtime, effect_ids)
    if pending:
        with transaction(runtime.engine) as session:
            session.add(Outbox(workspace_id=_workspace_of(runtime, pending[0]), job="rule_effects",
                               payload={"effect_ids": pending},
                               available_at=utcnow() + timedelta(seconds=retry_at or 1.0), attempts=0))
    return counts


def _run_one(runtime, effect: LeadEffect) -> tuple[str, float]:
    handler = EFFECTS.get(effect.kind)
    try:
        if handler is None:
            raise FatalError(f"unknown effect kind {effect.kind}", code="UNKNOWN_KIND")
        result = handler(runtime, effect)
    except RetriableError as exc:
        return _settle(runtime, effect.id, "retry", error=exc, wait=exc.retry_after)
    except FatalError as exc:
        return _settle(runtime, effect.id, "failed", error=exc)
    return _settle(runtime, effect.id, "done", result=result)


def _settle(runtime, effect_id: int, outcome: str, result: dict | None = None, error: Exception | None = None,
            wait: float | None = None) -> tuple[str, float]:
    with transaction(runtime.engine) as session:
        effect = session.get(LeadEffect, effect_id)
        effect.attempts += 1
        if outcome == "done":
            effect.status, effect.done_at, effect.result, effect.last_error = "done", utcnow(), result or {}, None
            return "done", 0.0
        effect.last_error = f"{type(error).__name__}: {str(error)[:500]}"
        if outcome == "failed" or effect.attempts >= defaults.RULES_EFFECT_MAX_ATTEMPTS:
            effect.status = "failed"
            logger.error("lead effect %s (%s) failed: %s", effect.id, effect.kind, type(error).__name__)
            return "failed", 0.0
        backoff = defaults.RULES_EFFECT_BACKOFF_SECONDS
        delay = max(wait or 0.0, float(backoff[min(effect.attempts - 1, len(backoff) - 1)]))
        if wait is not None and wait < backoff[0]:
            delay = wait          # the handler knows the wait is short (e.g. the CRM record is being created)
        logger.warning("lead effect %s (%s) will retry in %.1fs: %s", effect.id, effect.kind, delay, type(error).__name__)
        return "retry", delay


def _still_pending(runtime, effect_ids: list[int]) -> list[int]:
    with transaction(runtime.engine) as session:
        return list(session.scalars(select(LeadEffect.id).where(LeadEffect.id.in_(effect_ids),
                                                                LeadEffect.status == "pending")))


def _workspace_of(runtime, effect_id: int) -> str:
    with transaction(runtime.engine) as session:
        return session.get(LeadEffect, effect_id).workspace_id
