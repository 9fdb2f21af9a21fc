"""Queue lanes and back-pressure of the outbox relay (hub.sync.relay), against the real database and Redis.

A backfill stores a whole CRM as events; those go to the bulk queue, which workers take after live
changes, so a webhook that arrives behind a backfill's backlog is applied first. A queue that holds
its QUEUE_HIGH_WATER of jobs gets no more: its rows wait in the outbox, are not handed out again
when their lease runs out, and never count as lost. A bulk job that finds live work waiting hands
the rest of its events back to the outbox.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from rq import SimpleWorker
from sqlalchemy import select

from hub import defaults
from hub.connectors.base import CrmRecord
from hub.db import transaction
from hub.models import Event, Outbox
from hub.store import BULK_PROCESS_JOB
from hub.sync import jobs, relay
from hub.sync.replay import replay_failed
from hub.sync.snapshots import store_records
from hub.sandbox.signing import hubspot_v3_headers
from tests.conftest import HUBSPOT_APP_SECRET, run_pipeline
from tests.live_server import property_change

URL = "http://localhost/webhooks/hubspot"
BACKFILLED = 5


def backfilled(n: int) -> CrmRecord:
    return CrmRecord("contact", str(900 + n), {"email": f"old{n}@example.com", "firstname": f"Old{n}"},
                     updated_at=datetime(2026, 1, 1, tzinfo=timezone.utc))


def backfill_pages(runtime, workspace_id: str, pages: int = BACKFILLED) -> None:
    """What `hub backfill hubspot` stores: one page (one outbox row) of one record per call here."""
    for n in range(pages):
        store_records(runtime.engine, workspace_id, "hubspot", [backfilled(n)], "backfill", BULK_PROCESS_JOB)


def post_live_change(client) -> None:
    body = json.dumps([property_change(4242, "email", "live@example.com", 77, 1764093860000)]).encode()
    answer = client.post("/webhooks/hubspot", data=body,
                         headers=hubspot_v3_headers(HUBSPOT_APP_SECRET, "POST", URL, body))
    assert answer.status_code == 200


def statuses(runtime) -> dict[str, str]:
    """origin ("backfill" or "webhook") -> statuses of its events."""
    with transaction(runtime.engine) as session:
        rows = session.execute(select(Event.dedupe_key, Event.status)).all()
    found: dict[str, list[str]] = {}
    for key, status in rows:
        found.setdefault("backfill" if ":backfill:" in key else "webhook", []).append(status)
    return {origin: ",".join(sorted(set(values))) for origin, values in found.items()}


def worker(runtime) -> SimpleWorker:
    from hub.sync.worker import make_worker

    return make_worker(runtime, simple=True)


def test_a_live_change_behind_a_backfill_backlog_is_applied_first(runtime, client, workspace, hubspot_connection):
    backfill_pages(runtime, workspace["workspace_id"])
    post_live_change(client)                     # stored after the backlog: its outbox row comes last
    relay.drain(runtime)
    queues = relay.queues_for(runtime.redis())
    assert queues[defaults.BULK_QUEUE_NAME].count >= 1 and queues[defaults.QUEUE_NAME].count == 1

    worker(runtime).work(burst=True, max_jobs=1, with_scheduler=False)

    assert statuses(runtime) == {"backfill": "pending", "webhook": "processed"}
    run_pipeline(runtime)
    assert statuses(runtime) == {"backfill": "processed", "webhook": "processed"}


def test_a_full_queue_keeps_its_rows_in_the_outbox_and_live_rows_still_go_out(
        runtime, client, workspace, hubspot_connection, monkeypatch):
    monkeypatch.setitem(defaults.QUEUE_HIGH_WATER, defaults.BULK_QUEUE_NAME, 2)
    monkeypatch.setattr(defaults, "RELAY_EVENTS_PER_JOB", 1)          # one job per backfilled page
    backfill_pages(runtime, workspace["workspace_id"])
    queues = relay.queues_for(runtime.redis())
    bulk = queues[defaults.BULK_QUEUE_NAME]

    assert relay.relay_once(runtime, queues) == BACKFILLED               # the queue was empty: all go
    assert bulk.count == BACKFILLED
    backfill_pages(runtime, workspace["workspace_id"], pages=BACKFILLED + 2)   # two more pages come in
    post_live_change(client)

    # Every lease has run out (lease 0): without back-pressure each waiting row would go out again.
    assert relay.relay_once(runtime, queues, lease_seconds=0) == 1       # only the live row
    assert bulk.count == BACKFILLED and queues[defaults.QUEUE_NAME].count == 1
    with transaction(runtime.engine) as session:
        bulk_rows = session.execute(select(Outbox.attempts, Outbox.enqueued_at).where(
            Outbox.job == BULK_PROCESS_JOB)).all()
    assert sorted(attempts for attempts, _ in bulk_rows) == [0, 0] + [1] * BACKFILLED

    run_pipeline(runtime)
    assert statuses(runtime) == {"backfill": "processed", "webhook": "processed"}


@pytest.mark.parametrize("held", [0, 1])
def test_rows_of_a_queue_below_its_high_water_go_out(runtime, workspace, monkeypatch, held):
    """The mark is the queue's own length: below it, rows go out; at it, they wait."""
    monkeypatch.setitem(defaults.QUEUE_HIGH_WATER, defaults.BULK_QUEUE_NAME, 1)
    queues = relay.queues_for(runtime.redis())
    for _ in range(held):
        queues[defaults.BULK_QUEUE_NAME].enqueue("builtins.len", [])
    backfill_pages(runtime, workspace["workspace_id"], pages=1)
    assert relay.relay_once(runtime, queues) == (0 if held else 1)


def test_a_mass_replay_goes_to_the_bulk_queue(runtime, client, workspace, hubspot_connection):
    post_live_change(client)
    with transaction(runtime.engine) as session:
        session.execute(Event.__table__.update().values(status="failed"))
        session.execute(Outbox.__table__.update().values(done_at=datetime.now(timezone.utc)))
    assert replay_failed(runtime) == 1
    relay.drain(runtime)
    queues = relay.queues_for(runtime.redis())
    assert (queues[defaults.QUEUE_NAME].count, queues[defaults.BULK_QUEUE_NAME].count) == (0, 1)


def test_a_bulk_job_hands_its_rest_back_when_live_work_waits(runtime, workspace, monkeypatch):
    monkeypatch.setattr(defaults, "BULK_SLICE_SECONDS", 0.0)
    monkeypatch.setattr(defaults, "BULK_CHUNK_EVENTS", 2)
    store_records(runtime.engine, workspace["workspace_id"], "hubspot", [backfilled(n) for n in range(5)],
                  "backfill", BULK_PROCESS_JOB)                       # one page: one outbox row of 5 events
    queues = relay.queues_for(runtime.redis())
    assert relay.relay_once(runtime, queues) == 1
    (outbox_id,) = _open_outbox_ids(runtime)
    queues[defaults.QUEUE_NAME].enqueue("builtins.len", [])           # a live job waits

    counts = jobs.process_bulk_outbox([outbox_id])

    assert counts["processed"] == 2 and counts["yielded"] == 1           # one chunk, then it gave way
    assert statuses(runtime) == {"backfill": "pending,processed"}
    with transaction(runtime.engine) as session:                        # not a lost delivery
        assert session.scalar(select(Outbox.attempts).where(Outbox.id == outbox_id)) == 0
    bulk = queues[defaults.BULK_QUEUE_NAME]
    assert bulk.count == 1
    relay.relay_once(runtime, queues)
    assert bulk.count == 2                                              # back in the outbox at once, no lease
    for name in (defaults.QUEUE_NAME, defaults.RULES_QUEUE_NAME):     # the work that went first is done
        queues[name].empty()
    counts = jobs.process_bulk_outbox([outbox_id])
    assert counts["processed"] == 3 and counts["skipped"] == 2 and "yielded" not in counts
    assert statuses(runtime) == {"backfill": "processed"} and _open_outbox_ids(runtime) == []


def _open_outbox_ids(runtime) -> list[int]:
    with transaction(runtime.engine) as session:
        return list(session.scalars(select(Outbox.id).where(Outbox.done_at.is_(None), Outbox.job == BULK_PROCESS_JOB)))


def evaluation_rows(runtime) -> list[Outbox]:
    with transaction(runtime.engine) as session:
        return list(session.scalars(select(Outbox).where(Outbox.job == "evaluate_rules")))


def test_rule_evaluations_wait_in_the_outbox_one_per_contact_while_the_rules_queue_is_full(runtime, workspace):
    from hub.models import Contact
    from hub.rules.schedule import schedule_evaluation

    ws = workspace["workspace_id"]
    with transaction(runtime.engine) as session:
        contact = Contact(workspace_id=ws, email="busy@example.com")
        session.add(contact)
    queues = relay.queues_for(runtime.redis())
    rules = queues[defaults.RULES_QUEUE_NAME]
    for _ in range(defaults.QUEUE_HIGH_WATER[defaults.RULES_QUEUE_NAME]):
        rules.enqueue("builtins.len", [])            # the live lane keeps the workers from these

    for _ in range(3):                               # the person changes three times meanwhile
        with transaction(runtime.engine) as session:
            schedule_evaluation(session, ws, contact.id)
        assert relay.relay_once(runtime, queues) == 0

    rules.empty()
    assert relay.relay_once(runtime, queues) == 1
    [row] = evaluation_rows(runtime)
    assert row.payload == {"contact_id": contact.id} and row.enqueued_at is not None


def test_rules_rows_go_out_in_small_jobs_and_events_in_large_ones():
    """A rules job holds a worker from live work for about RELAY_ROWS_PER_JOB evaluations only."""
    rules_rows = [(n, "w1", {"contact_id": f"c{n}"}, "evaluate_rules") for n in range(25)]
    event_rows = [(100 + n, "w1", {"event_ids": [n]}, "process_events") for n in range(25)]
    jobs_made = relay._group_into_jobs(rules_rows + event_rows)
    sizes = {queue: [len(ids) for _, name, ids in jobs_made if name == queue]
             for queue in (defaults.RULES_QUEUE_NAME, defaults.QUEUE_NAME)}
    limit = defaults.RELAY_ROWS_PER_JOB[defaults.RULES_QUEUE_NAME]
    assert sizes[defaults.RULES_QUEUE_NAME] == [limit, limit, 25 - 2 * limit]
    assert sizes[defaults.QUEUE_NAME] == [25]


def test_a_job_marks_its_finished_rows_done_together_and_leaves_the_rest_at_an_error(runtime, workspace):
    from tests.db_helpers import statements_sent

    ws = workspace["workspace_id"]
    with transaction(runtime.engine) as session:
        rows = [Outbox(workspace_id=ws, job=kind, payload={}) for kind in ("fine", "fine", "fine", "fine", "broken", "fine")]
        session.add_all(rows)
        session.flush()
        ids = [row.id for row in rows]
    ran: list[int] = []

    def fine(rt, row):
        ran.append(row.id)

    def broken(rt, row):
        raise RuntimeError("vendor down")

    with statements_sent(runtime.engine, lambda sql: sql.startswith("UPDATE outbox SET done_at")) as marks:
        assert len(jobs.run_outbox_rows(ids[:3], {"fine": fine})) == 3
        with pytest.raises(RuntimeError):
            jobs.run_outbox_rows(ids[3:], {"fine": fine, "broken": broken})

    assert len(marks) == 2                      # one statement per job, whatever its number of rows
    with transaction(runtime.engine) as session:
        done = dict(session.execute(select(Outbox.id, Outbox.done_at.is_not(None)).where(Outbox.id.in_(ids))).all())
    assert [done[i] for i in ids] == [True, True, True, True, False, False]
    assert ran == ids[:4]
