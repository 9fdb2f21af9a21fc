"""Group commit on PostgreSQL (hub.store): deliveries that wait while a write is in flight share one
statement and one commit, an event in two of them is stored once, a bad delivery fails alone, and a
kept connection the server dropped is replaced."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import DataError

from hub import store
from hub.db import transaction
from hub.models import Event, Outbox, utcnow
from tests.conftest import make_runtime
from tests.live_server import property_change
from webhooks import hubspot
from webhooks.common import IncomingEvent

pytestmark = pytest.mark.postgres

WAIT_SECONDS = 10


@pytest.fixture
def pg_runtime(monkeypatch, tmp_path, postgres_url, redis_url):
    return make_runtime(monkeypatch, tmp_path, postgres_url, redis_url)


@pytest.fixture
def workspace_id(pg_runtime):
    from hub import admin

    return admin.create_workspace(pg_runtime, "Acme")["workspace_id"]


def delivery(workspace_id: str, *event_ids: int) -> list[tuple[str, IncomingEvent]]:
    """A HubSpot delivery (documented propertyChange shape) of the given event ids, parsed as the receiver does."""
    import json

    items = [property_change(6000 + n, "firstname", f"Name{n}", n, 1764093860000 + n) for n in event_ids]
    return [(workspace_id, event) for event in hubspot.parse(json.dumps(items).encode())]


def count(runtime, model, *where) -> int:
    with transaction(runtime.engine) as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def wait_until(condition, what: str):
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class HeldKey:
    """Another transaction inserts the event of `routed` and holds it uncommitted, so a write of the
    same event waits on its unique-index lock until `release()`."""

    def __init__(self, runtime, routed):
        workspace_id, event = routed[0]
        self.conn = runtime.engine.connect()
        self.tx = self.conn.begin()
        now = utcnow()
        self.conn.execute(insert(Event.__table__).values(
            workspace_id=workspace_id, source=event.source, kind=event.kind, dedupe_key=event.dedupe_key,
            payload=event.payload, received_at=now, occurred_at=event.occurred_at, status="pending", attempts=0))

    def release(self):
        self.tx.commit()
        self.conn.close()


def waiting_on_lock(runtime) -> bool:
    with runtime.engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND wait_event_type = 'Lock'")).scalar() > 0


def grouped_writes(runtime, workspace_id, deliveries):
    """Hold the writer on a locked key, queue `deliveries` behind it, then let it go: the queued
    deliveries are written as one group. Returns their results (or exceptions)."""
    first = delivery(workspace_id, 1)
    held = HeldKey(runtime, first)
    writer = store._group_writer(runtime.engine)
    with ThreadPoolExecutor(max_workers=len(deliveries) + 1) as pool:
        blocked = pool.submit(store.ingest, runtime.engine, first)
        wait_until(lambda: waiting_on_lock(runtime), "the first write to wait on the held key")
        futures = [pool.submit(store.ingest, runtime.engine, routed) for routed in deliveries]
        wait_until(lambda: len(writer._pending) == len(deliveries), "the deliveries to queue")
        held.release()
        assert blocked.result(timeout=WAIT_SECONDS).duplicates == 1
        outcomes = []
        for future in futures:
            try:
                outcomes.append(future.result(timeout=WAIT_SECONDS))
            except Exception as exc:  # noqa: BLE001 - the test looks at it
                outcomes.append(exc)
    return outcomes


def test_waiting_deliveries_share_one_commit_and_an_event_in_two_of_them_is_stored_once(pg_runtime, workspace_id):
    deliveries = [delivery(workspace_id, 10, 11), delivery(workspace_id, 20), delivery(workspace_id, 10, 30)]
    results = grouped_writes(pg_runtime, workspace_id, deliveries)

    assert [(len(r.accepted), r.duplicates) for r in results] == [(2, 0), (1, 0), (1, 1)]
    with transaction(pg_runtime.engine) as session:
        transactions = session.execute(text(
            "SELECT count(DISTINCT xmin::text) FROM event WHERE id = ANY(:ids)"),
            {"ids": [i for r in results for i in r.accepted]}).scalar()
        outbox = session.scalars(select(Outbox).order_by(Outbox.id)).all()
    assert transactions == 1                                  # one statement, one commit
    assert sorted(row.payload["event_ids"] for row in outbox) == sorted(r.accepted for r in results)
    assert count(pg_runtime, Event) == 5                       # the held event and four new ones


def test_a_bad_delivery_in_a_group_fails_alone(pg_runtime, workspace_id):
    too_long = delivery(workspace_id, 40)
    too_long[0][1].dedupe_key = "hubspot:" + "x" * 300        # longer than the column
    results = grouped_writes(pg_runtime, workspace_id, [delivery(workspace_id, 50), too_long, delivery(workspace_id, 60)])

    assert isinstance(results[1], DataError)
    assert [len(results[0].accepted), len(results[2].accepted)] == [1, 1]
    assert count(pg_runtime, Event) == 3                       # the held event and the two good ones
    assert count(pg_runtime, Outbox) == 2


def test_a_kept_connection_the_server_dropped_is_replaced(pg_runtime, workspace_id):
    assert len(store.ingest(pg_runtime.engine, delivery(workspace_id, 70)).accepted) == 1
    with pg_runtime.engine.connect() as conn:
        dropped = conn.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                    "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
    assert dropped >= 1
    result = store.ingest(pg_runtime.engine, delivery(workspace_id, 71))
    assert len(result.accepted) == 1
    assert count(pg_runtime, Outbox) == 2


def test_concurrent_deliveries_each_get_their_own_outbox_row(pg_runtime, workspace_id):
    start = threading.Barrier(8)

    def deliver(n):
        start.wait(timeout=WAIT_SECONDS)
        return store.ingest(pg_runtime.engine, delivery(workspace_id, 100 + 2 * n, 101 + 2 * n))

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(deliver, range(8)))
    assert [len(r.accepted) for r in results] == [2] * 8
    with transaction(pg_runtime.engine) as session:
        listed = sorted(row.payload["event_ids"] for row in session.scalars(select(Outbox)))
    assert listed == sorted(r.accepted for r in results)


def test_payload_values_are_stored_exactly_on_both_json_paths(pg_runtime, workspace_id):
    """The fast path (orjson) and the fallback for integers wider than 64 bits keep every value as sent."""
    [(_, fast)] = delivery(workspace_id, 901)
    [(_, wide)] = delivery(workspace_id, 902)
    fast.payload["propertyValue"] = "Zoë 😀 \"quoted\""
    wide.payload["objectId"] = 2 ** 70 + 1                  # no 64-bit JSON library can carry it

    store.ingest(pg_runtime.engine, [(workspace_id, fast)])
    store.ingest(pg_runtime.engine, [(workspace_id, wide)])

    with transaction(pg_runtime.engine) as session:
        stored = {e.dedupe_key: e.payload for e in session.scalars(select(Event))}
    assert stored[fast.dedupe_key] == fast.payload
    assert stored[wide.dedupe_key]["objectId"] == 2 ** 70 + 1
