"""Backfill: page through every contact of a CRM and store each as an event for processing.

`hub backfill hubspot|salesforce --workspace W` runs `backfill`: the connector's `iter_all(cursor)`
walks the CRM under the shared rate limit (the connector acquires the Redis token bucket before
each call); after each page the records are stored as events (one transaction, duplicates
ignored; their outbox rows go to the bulk queue, behind live changes: hub.sync.relay) and then the
cursor is saved in `sync_cursor` (name "backfill"). After a crash the next
run resumes from the saved cursor; a page read twice stores nothing twice. A finished backfill
starts over when run again.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
import queue
import threading
from typing import Callable, Iterator

from hub import defaults
from hub.connectors.base import ChangePage, CrmConnector
from hub.db import transaction
from hub.store import BULK_PROCESS_JOB
from hub.sync.polling import load_cursor, save_cursor
from hub.sync.snapshots import store_records

logger = logging.getLogger(__name__)

CURSOR_NAME = "backfill"


@dataclass
class BackfillResult:
    read: int = 0
    stored: int = 0
    pages: int = 0
    resumed: bool = False


def start_cursor(runtime, workspace_id: str, system: str) -> tuple[str | None, bool]:
    """(cursor to resume from, whether it is a resume)."""
    with transaction(runtime.engine) as session:
        row = load_cursor(session, workspace_id, system, CURSOR_NAME)
        if row.finished_at is not None or row.cursor is None:
            row.done = 0
            row.finished_at = None
            return None, False
        return row.cursor, True


def read_full_pages(connector: CrmConnector) -> None:
    """HubSpot's list API pages 100 contacts, but only 50 when property histories are asked for:
    a backfill reads full pages (twice the contacts per call under the same rate limit); each
    record's lastmodifieddate then stamps its values, and processing judges them like any change."""
    if getattr(connector, "kind", "") == "hubspot":
        connector.history_properties = ()
        connector.backfill_page_size = defaults.HUBSPOT_BATCH_SIZE


def backfill(runtime, workspace_id: str, system: str, connector: CrmConnector,
             progress: Callable[[int], None] | None = None, with_history: bool = False) -> BackfillResult:
    if not with_history:
        read_full_pages(connector)
    cursor, resumed = start_cursor(runtime, workspace_id, system)
    result = BackfillResult(resumed=resumed)
    for page in prefetched(connector.iter_all(cursor)):
        stored = store_records(runtime.engine, workspace_id, system, page.records, "backfill", BULK_PROCESS_JOB)
        save_cursor(runtime, workspace_id, system, CURSOR_NAME, page.cursor, len(page.records),
                    finished=page.cursor is None)
        result.read += len(page.records)
        result.stored += len(stored.accepted)
        result.pages += 1
        if progress is not None:
            progress(len(page.records))
        if page.cursor is None:
            break
    logger.info("backfill %s for %s: %s records in %s pages", system, workspace_id, result.read, result.pages)
    return result


_DONE = object()


def prefetched(pages: Iterator[ChangePage], depth: int = defaults.BACKFILL_PREFETCH_PAGES) -> Iterator[ChangePage]:
    """Read the next page while the current one is stored (pages still come, and are saved, in order).

    The reader stops after at most `depth` pages ahead; its error is raised here, after the pages
    read before it were handed out, so the stored cursor never skips a page.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def read() -> None:
        try:
            for page in pages:
                while not stop.is_set():
                    try:
                        buffer.put(page, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            buffer.put(exc)

    reader = threading.Thread(target=read, name="backfill-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join(timeout=defaults.HTTP_TIMEOUT_SECONDS * 2)
