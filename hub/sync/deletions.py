"""Propagating CRM deletions (workspace setting `deletions: propagate`) and recognising their echo.

When one CRM deletes a record and the workspace propagates deletions, processing (in its
transaction, through decisions.record_deletion) calls `schedule`: each linked record in the other
CRM is unlinked at once (tombstoned, so late events about it are ignored and the push engine does not
create it again), an echo-ledger entry marks it as deleted by the hub, and it joins the workspace's
waiting "sync_delete" outbox row. That job (`run_delete_outbox`) deletes the records in batches
through the connectors (HubSpot batch archive ≤100, Salesforce sObject Collections delete ≤200), rate
limited, retried and sync_logged like every write; a record that cannot be deleted fails alone,
logged. The deletion webhook the other CRM sends back is recognised by `is_echo` and changes nothing.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select

from hub import defaults
from hub.db import is_postgres, transaction
from hub.exceptions import FatalError, RetriableError
from hub.mappings.transforms import epoch_ms
from hub.models import EchoLedger, Outbox, SyncLog, utcnow
from hub.sync import identity
from hub.sync.identity import ExternalId

logger = logging.getLogger(__name__)

JOB = "sync_delete"
LEDGER_FIELD = "_deleted"          # echo-ledger field of a deletion the hub made
LEDGER_HASH = "deleted"
# Salesforce: the record is already gone (deleted or never there): nothing left to delete.
ALREADY_GONE = frozenset({"ENTITY_IS_DELETED"})


@dataclass(frozen=True)
class Target:
    system: str
    external_id: str
    object_type: str | None

    def as_json(self) -> dict:
        return {"system": self.system, "id": self.external_id, "type": self.object_type}


# --- in processing's transaction ---------------------------------------------------------------------

def schedule(session, workspace_id: str, contact_id: str, targets: list[Target]) -> None:
    """Unlink the records the hub is about to delete and queue their deletion (one waiting row)."""
    now = utcnow()
    for target in targets:
        identity.unlink(session, workspace_id, ExternalId(target.system, target.external_id, target.object_type),
                        epoch_ms(now))
        session.add(EchoLedger(workspace_id=workspace_id, system=target.system, contact_id=contact_id,
                               object_id=target.external_id, field=LEDGER_FIELD, value_hash=LEDGER_HASH,
                               written_at=now))
    row = _waiting_row(session, workspace_id)
    entries = [t.as_json() for t in targets]
    if row is None:
        session.add(Outbox(workspace_id=workspace_id, job=JOB, payload={"targets": entries},
                           available_at=now + timedelta(seconds=defaults.SYNC_PUSH_COALESCE_SECONDS), attempts=0))
    else:
        row.payload = {"targets": list((row.payload or {}).get("targets", [])) + entries}


def _waiting_row(session, workspace_id: str) -> Outbox | None:
    query = select(Outbox).where(Outbox.workspace_id == workspace_id, Outbox.job == JOB, Outbox.done_at.is_(None),
                                 Outbox.enqueued_at.is_(None)).order_by(Outbox.id).limit(1)
    if is_postgres(session.get_bind()):
        query = query.with_for_update()
    return session.scalar(query)


def is_echo(session, workspace_id: str, ref: ExternalId) -> bool:
    """The CRM reports the deletion of a record the hub deleted (within the echo ledger's lifetime)."""
    cutoff = utcnow() - timedelta(seconds=defaults.ECHO_LEDGER_TTL_SECONDS)
    return session.scalar(select(EchoLedger.id).where(
        EchoLedger.workspace_id == workspace_id, EchoLedger.system == ref.system,
        EchoLedger.object_id == ref.external_id, EchoLedger.field == LEDGER_FIELD,
        EchoLedger.written_at >= cutoff).limit(1)) is not None


# --- the job ----------------------------------------------------------------------------------------

def run_delete_outbox(runtime, row: Outbox) -> dict:
    """Delete the row's records in each CRM, batched; a vendor outage leaves the row for a later pass."""
    from hub.sync.engine import connectors_for

    targets = [Target(t["system"], t["id"], t.get("type")) for t in (row.payload or {}).get("targets", [])]
    connectors = connectors_for(runtime, row.workspace_id)
    counts = {"deleted": 0, "failed": 0}
    for (system, object_type), ids in _grouped(targets).items():
        connector = connectors.get(system)
        if connector is None:
            _log(runtime, row.workspace_id, system, ids, f"no {system} connection: not deleted")
            counts["failed"] += len(ids)
            continue
        try:
            results = connector.batch_delete(object_type, ids)
        except RetriableError:
            if row.attempts < defaults.SYNC_PUSH_MAX_ATTEMPTS:
                raise                       # the row goes out again after its lease
            _log(runtime, row.workspace_id, system, ids, f"gave up after {row.attempts} attempts")
            counts["failed"] += len(ids)
            continue
        except FatalError as exc:
            _log(runtime, row.workspace_id, system, ids, f"{exc.code}: {exc}")
            counts["failed"] += len(ids)
            continue
        for result in results:
            if result.ok or result.error_code in ALREADY_GONE:
                counts["deleted"] += 1
            else:
                _log(runtime, row.workspace_id, system, [result.key], f"{result.error_code}: {result.error_message}")
                counts["failed"] += 1
    return counts


def _grouped(targets: list[Target]) -> dict[tuple[str, str], list[str]]:
    groups: dict[tuple[str, str], list[str]] = {}
    for target in targets:
        default_type = "contact" if target.system == "hubspot" else "Lead"
        ids = groups.setdefault((target.system, target.object_type or default_type), [])
        if target.external_id not in ids:
            ids.append(target.external_id)
    return groups


def _log(runtime, workspace_id: str, system: str, ids: list[str], error: str) -> None:
    logger.warning("%s deletion of %s record(s) failed: %s", system, len(ids), error)
    with transaction(runtime.engine) as session:
        session.add(SyncLog(workspace_id=workspace_id, target=system, operation="delete.record",
                            object_ids=list(ids)[:200], status="error", error=error[:2000]))
