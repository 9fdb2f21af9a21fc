"""sync_log: one row for every outbound CRM call (target, operation, ids, request id, result, latency).

Connectors call `SyncLogRecorder.record` after each HTTP call (see CrmConnector._call). By default a
row is written in its own short transaction, so the audit trail survives a rollback of the caller's
work. A caller that already holds a write transaction on SQLite (one writer at a time) passes its
session with `bind(session)` so the row joins that transaction instead of waiting on the lock.
"""
from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from hub.db import transaction
from hub.logs import mask
from hub.models import SyncLog

logger = logging.getLogger(__name__)

ERROR_TEXT_LIMIT = 2000
OBJECT_IDS_LIMIT = 200


class SyncLogRecorder:
    """Writes SyncLog rows for one workspace."""

    def __init__(self, engine, workspace_id: str, session: Session | None = None):
        self.engine = engine
        self.workspace_id = workspace_id
        self.session = session

    def bind(self, session: Session | None) -> "SyncLogRecorder":
        """Write into `session` (the caller commits it); None goes back to own transactions."""
        self.session = session
        return self

    def record(self, *, target: str, operation: str, object_ids: list[str], request_id: str | None,
               status: str, http_status: int | None, latency_ms: float, error: str | None) -> None:
        row = SyncLog(workspace_id=self.workspace_id, target=target, operation=operation,
                      object_ids=[mask(str(i)) for i in object_ids[:OBJECT_IDS_LIMIT]],
                      request_id=(request_id or None) and request_id[:128], status=status,
                      http_status=http_status, latency_ms=round(latency_ms, 3),
                      error=mask(error)[:ERROR_TEXT_LIMIT] if error else None)
        if self.session is not None:
            self.session.add(row)
            return
        with transaction(self.engine) as session:
            session.add(row)
