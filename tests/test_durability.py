"""Durability against the real services: Redis down while events arrive, a worker SIGKILLed
mid-job, the database down, failing events retried with backoff then replayed from the CLI."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from rq import Queue
from rq.registry import FailedJobRegistry, StartedJobRegistry
from sqlalchemy import func, select

from hub import defaults
from hub.app import create_app
from hub.cli import main as hub_cli
from hub.db import get_engine, transaction
from hub.exceptions import FatalError, RetriableError
from hub.models import Contact, Event, Identity, Outbox, utcnow
from hub.runtime import Runtime
from hub.sync import relay
from hub.sync.worker import run_burst
from tests import services
from tests.conftest import HUBSPOT_APP_SECRET, fixture_json, make_runtime, run_pipeline
from tests.live_server import property_change, serve, signed_hubspot_post
from hub.sandbox.signing import hubspot_v3_headers

ROOT = Path(__file__).resolve().parents[1]
URL = "http://localhost/webhooks/hubspot"
OUTAGE_EVENTS = int(os.environ.get("HUB_TEST_OUTAGE_EVENTS", "1000"))
EVENTS_PER_DELIVERY = 10
OUTAGE_WORKERS = 2
FIRST_OCCURRED_AT = 1764093860000


def email_event(n: int) -> dict:
    """A contact.propertyChange of `email` for its own HubSpot contact: one person per event."""
    return property_change(100000 + n, "email", f"person{n}@example.com", 5000000 + n, FIRST_OCCURRED_AT + n)


def post(client, items: list[dict]):
    body = json.dumps(items).encode()
    return client.post("/webhooks/hubspot", data=body,
                       headers=hubspot_v3_headers(HUBSPOT_APP_SECRET, "POST", URL, body))


def count(runtime, model, *where) -> int:
    with transaction(runtime.engine) as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def event_states(runtime) -> list[tuple[str, int]]:
    with transaction(runtime.engine) as session:
        rows = session.execute(select(Event.status, Event.attempts).order_by(Event.occurred_at, Event.id))
        return [tuple(row) for row in rows]


def wait_for(condition, timeout: float, what: str, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


EVENT_ROWS = Outbox.job == "process_events"       # processing may add rows of its own (sync pushes)


def closed_port_database_url() -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:{services.free_port()}/hub"


# --- Redis down while events arrive ----------------------------------------------------------------

@pytest.fixture
def outage_runtime(monkeypatch, tmp_path, database_url, redis_server):
    """A runtime on a Redis this test stops and restarts, with the HubSpot connection."""
    from hub import admin
    from tests.conftest import HUBSPOT_APP_ID, HUBSPOT_PORTAL_ID

    runtime = make_runtime(monkeypatch, tmp_path, database_url, redis_server.url)
    workspace = admin.create_workspace(runtime, "Acme")
    admin.connect(runtime, workspace["workspace_id"], "hubspot", HUBSPOT_PORTAL_ID,
                  {"access_token": "test-access-token", "app_secret": HUBSPOT_APP_SECRET}, {"app_id": HUBSPOT_APP_ID})
    return runtime


class RelayThread:
    """The real `hub relay` loop, in a thread of this test."""

    def __init__(self, runtime):
        self.stopped = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(runtime,), name="relay", daemon=True)

    def _run(self, runtime):
        try:
            relay.run_forever(runtime, stop=self.stopped.is_set)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.stopped.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "relay did not stop"


@contextmanager
def worker_processes(number: int, env: dict):
    """`hub worker` processes (as deployed), stopped with SIGTERM (rq's warm shutdown) at the end."""
    workers = [start_worker(env) for _ in range(number)]
    try:
        yield workers
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=10)


@pytest.mark.redis_server
def test_events_posted_while_redis_is_down_are_all_processed_once_after_it_returns(
        outage_runtime, redis_server, monkeypatch, caplog):
    runtime = outage_runtime
    monkeypatch.setattr(defaults, "RELAY_MAX_BACKOFF_SECONDS", 0.5)   # keep the test short
    caplog.set_level(logging.WARNING, logger="hub.sync.relay")
    redis_server.stop()
    items = [email_event(n) for n in range(OUTAGE_EVENTS)]
    deliveries = [items[i:i + EVENTS_PER_DELIVERY] for i in range(0, len(items), EVENTS_PER_DELIVERY)]

    with RelayThread(runtime) as relay_thread, serve(create_app(runtime=runtime)) as base_url:
        def deliver(batch):
            body, headers = signed_hubspot_post(base_url, batch)
            return requests.post(base_url + "/webhooks/hubspot", data=body, headers=headers, timeout=30)

        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = [r.status_code for r in pool.map(deliver, deliveries)]
        assert statuses == [200] * len(deliveries)
        assert count(runtime, Event) == OUTAGE_EVENTS
        wait_for(lambda: "redis unavailable" in caplog.text, 10, "the relay to meet the outage")
        assert count(runtime, Outbox, Outbox.enqueued_at.is_not(None)) == 0    # nothing marked while down
        assert count(runtime, Outbox) == len(deliveries)
        assert relay_thread.thread.is_alive()

        redis_server.start()
        wait_for(lambda: count(runtime, Outbox, EVENT_ROWS, Outbox.attempts == 0) == 0,
                 30, "the relay to drain the outbox")

        with worker_processes(OUTAGE_WORKERS, dict(os.environ, HUB_REDIS_URL=runtime.redis_url)):
            wait_for(lambda: count(runtime, Event, Event.status == "pending") == 0, 240,
                     "the workers to process every event", step=0.5)
        assert not relay_thread.errors

    assert event_states(runtime) == [("processed", 1)] * OUTAGE_EVENTS     # none lost, none applied twice
    assert count(runtime, Contact) == OUTAGE_EVENTS
    with transaction(runtime.engine) as session:
        external_ids = session.scalars(select(Identity.external_id).where(Identity.system == "hubspot")).all()
    assert sorted(external_ids) == sorted(str(item["objectId"]) for item in items)
    assert count(runtime, Outbox, EVENT_ROWS, Outbox.done_at.is_(None)) == 0
    assert count(runtime, Outbox, EVENT_ROWS, Outbox.attempts != 1) == 0    # each row handed out once


def test_relay_pass_marks_nothing_when_redis_refuses(outage_runtime, redis_server):
    runtime = outage_runtime
    assert post(create_app(runtime=runtime).test_client(), [email_event(1)]).status_code == 200
    redis_server.stop()
    with pytest.raises(relay.RedisError):
        relay.relay_once(runtime)
    with transaction(runtime.engine) as session:
        row = session.scalars(select(Outbox)).one()
        assert (row.enqueued_at, row.attempts) == (None, 0)
    redis_server.start()
    assert relay.drain(runtime) == 1


# --- a worker killed in the middle of a job ---------------------------------------------------------

def _worker_log():
    """Where worker output goes: HUB_TEST_WORKER_LOG (appended, for debugging) or nowhere."""
    return open(os.environ.get("HUB_TEST_WORKER_LOG") or os.devnull, "a")


def start_worker(env: dict) -> subprocess.Popen:
    """`hub worker` (the forking RQ worker) in its own process group."""
    return subprocess.Popen([sys.executable, "-m", "hub.cli", "worker"], cwd=ROOT, env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=_worker_log())


def test_worker_killed_mid_job_leaves_each_effect_exactly_once(client, runtime, hubspot_connection, tmp_path):
    items = [email_event(1), email_event(2), email_event(3)]
    assert post(client, items).json == {"accepted": 3, "duplicates": 0}
    with transaction(runtime.engine) as session:
        outbox = session.scalars(select(Outbox).where(EVENT_ROWS)).one()
    first, middle, last = outbox.payload["event_ids"]
    assert relay.drain(runtime) == 1

    marker = tmp_path / "paused"
    worker = start_worker(dict(os.environ, HUB_REDIS_URL=runtime.redis_url, HUB_TEST_PAUSE_EVENT_ID=str(middle),
                               HUB_TEST_PAUSE_MARKER=str(marker)))
    try:
        wait_for(marker.exists, 30, "the worker to reach the middle event")
        # Mid-job: the first event is committed, the middle one's effects are written but not committed.
        assert event_states(runtime) == [("processed", 1), ("pending", 0), ("pending", 0)]
        assert count(runtime, Contact) == 1
    finally:
        # The worker and its work horse (rq puts the horse in a session of its own): both die at once.
        if marker.exists():
            os.kill(int(marker.read_text()), signal.SIGKILL)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    assert worker.returncode == -signal.SIGKILL

    assert wait_for(lambda: count(runtime, Contact) == 1 and event_states(runtime)[1] == ("pending", 0),
                    10, "the killed transaction to roll back")
    queue = Queue(defaults.QUEUE_NAME, connection=runtime.redis())
    assert queue.count == 0
    assert count(runtime, Outbox, EVENT_ROWS, Outbox.enqueued_at.is_(None)) == 0
    relay.drain(runtime)                                 # the lease still holds: not handed out
    assert count(runtime, Outbox, EVENT_ROWS, Outbox.attempts == 1) == 1
    time.sleep(1.1)
    relay.drain(runtime, lease_seconds=1)                # lease over: handed out again
    assert count(runtime, Outbox, EVENT_ROWS, Outbox.attempts == 2) == 1
    run_burst(runtime)

    assert event_states(runtime) == [("processed", 1)] * 3
    assert count(runtime, Contact) == 3
    assert count(runtime, Identity) == 3
    assert count(runtime, Outbox, EVENT_ROWS, Outbox.done_at.is_(None)) == 0

    # rq's own handling of the abandoned job: once its execution expires it goes to the failed
    # registry; an operator requeueing it (`rq requeue`) runs it a second time, changing nothing.
    started = StartedJobRegistry(queue=queue)
    abandoned = started.get_job_ids()
    assert len(abandoned) == 1 and queue.fetch_job(abandoned[0].split(":")[0]).func_name == relay.JOB_FUNCTION
    started.cleanup(timestamp=time.time() + defaults.JOB_TIMEOUT_SECONDS + 3600)
    failed = FailedJobRegistry(queue=queue)
    abandoned_id = abandoned[0].split(":")[0]
    assert abandoned_id in failed.get_job_ids()
    failed.requeue(abandoned_id)
    run_burst(runtime)
    assert event_states(runtime) == [("processed", 1)] * 3
    assert count(runtime, Contact) == 3
    assert count(runtime, Identity) == 3


# --- the database down -------------------------------------------------------------------------------

def test_database_down_answers_503_quickly_on_a_cold_start(runtime, hubspot_connection):
    down = Runtime.from_env({"HUB_DATABASE_URL": closed_port_database_url()})
    client = create_app(runtime=down).test_client()
    started = time.monotonic()
    response = post(client, [email_event(1)])
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.json == {"error": "database_unavailable"}
    assert elapsed < 2.0


def test_database_lost_after_start_answers_503_and_the_retry_is_stored_once(client, runtime, hubspot_connection,
                                                                            monkeypatch):
    assert post(client, [email_event(1)]).status_code == 200          # the directory is now warm
    live_engine = runtime.engine
    monkeypatch.setitem(runtime.__dict__, "engine", get_engine(closed_port_database_url()))
    response = post(client, [email_event(2), email_event(3)])
    assert response.status_code == 503
    assert response.json == {"error": "database_unavailable"}
    monkeypatch.setitem(runtime.__dict__, "engine", live_engine)       # the database is back
    assert count(runtime, Event) == 1
    retry = post(client, [email_event(2), email_event(3)])            # the vendor retries
    assert retry.json == {"accepted": 2, "duplicates": 0}
    assert count(runtime, Event) == 3
    assert count(runtime, Outbox) == 2


# --- failing events: backoff, the failed list, replay ---------------------------------------------------

@pytest.fixture
def flaky_vendor(monkeypatch):
    """Make processing of chosen HubSpot objects fail as a vendor outage would (RetriableError)."""
    from hub.sync import processing

    real = processing.process_event
    failing: dict[int, Exception] = {}

    def process_event(session, rt, event, parsed=None):
        error = failing.get(event.payload.get("objectId"))
        if error is not None:
            raise error
        return real(session, rt, event, parsed)

    monkeypatch.setattr(processing, "process_event", process_event)
    return failing


def test_failing_event_retries_with_backoff_then_lands_in_the_failed_list(
        client, runtime, hubspot_connection, flaky_vendor, monkeypatch):
    backoff = (0.2, 0.4, 0.6, 0.8)
    monkeypatch.setattr(defaults, "EVENT_RETRY_BACKOFF_SECONDS", backoff)
    broken = email_event(2)
    # Its sibling in the delivery is one the hub stores but does not act on (a non-primary association).
    sibling = fixture_json("hubspot/contact.associationChange__sample.json")[1]
    flaky_vendor[broken["objectId"]] = RetriableError("HubSpot answered 503", status=503)
    assert post(client, [broken, sibling]).status_code == 200

    def handed_out() -> int:
        with transaction(runtime.engine) as session:
            return session.scalar(select(Outbox.attempts).where(EVENT_ROWS))

    for attempt in range(1, defaults.EVENT_MAX_ATTEMPTS + 1):
        wait_for(lambda: relay.drain(runtime) >= 0 and handed_out() == attempt, 5,
                 f"attempt {attempt} to be handed out", step=0.02)
        before = utcnow()
        run_burst(runtime)
        after = utcnow()
        last = attempt == defaults.EVENT_MAX_ATTEMPTS
        assert event_states(runtime) == [("failed" if last else "pending", attempt), ("ignored", 1)]
        with transaction(runtime.engine) as session:
            row = session.scalars(select(Outbox).where(EVENT_ROWS)).one()
        if last:
            assert row.done_at is not None
            break
        step = timedelta(seconds=backoff[attempt - 1])
        assert before + step <= row.available_at <= after + step
        relay.drain(runtime)
        assert handed_out() == attempt or utcnow() >= row.available_at   # not handed out before its backoff
    with transaction(runtime.engine) as session:
        failed = session.scalars(select(Event).where(Event.status == "failed")).one()
    assert failed.last_error == "RetriableError: HubSpot answered 503"
    assert count(runtime, Contact) == 0

    # The vendor recovers; the operator replays the failed list from the CLI.
    del flaky_vendor[broken["objectId"]]
    result = CliRunner().invoke(hub_cli, ["replay", "--failed"])
    assert result.exit_code == 0, result.output
    assert "requeued: 1" in result.output
    run_pipeline(runtime)
    assert event_states(runtime) == [("processed", 1), ("ignored", 1)]
    assert count(runtime, Contact) == 1
    assert CliRunner().invoke(hub_cli, ["replay", "--failed"]).output.strip() == "requeued: 0"


def test_fatal_error_fails_at_once_and_replay_event_reruns_it(client, runtime, hubspot_connection, flaky_vendor):
    item = email_event(1)
    flaky_vendor[item["objectId"]] = FatalError("property does not exist", code="VALIDATION_ERROR", status=400)
    assert post(client, [item]).status_code == 200
    run_pipeline(runtime)
    assert event_states(runtime) == [("failed", 1)]
    with transaction(runtime.engine) as session:
        event_id = session.scalars(select(Event.id)).one()

    del flaky_vendor[item["objectId"]]
    result = CliRunner().invoke(hub_cli, ["replay", "--event", str(event_id)])
    assert result.exit_code == 0, result.output
    assert f"requeued: {event_id}" in result.output
    run_pipeline(runtime)
    assert event_states(runtime) == [("processed", 1)]
    assert count(runtime, Contact) == 1

    # Replaying a processed event re-applies it: nothing changes.
    assert CliRunner().invoke(hub_cli, ["replay", "--event", str(event_id)]).exit_code == 0
    run_pipeline(runtime)
    assert event_states(runtime) == [("processed", 1)]
    assert count(runtime, Contact) == 1
    assert count(runtime, Identity) == 1
    missing = CliRunner().invoke(hub_cli, ["replay", "--event", str(event_id + 1000)])
    assert missing.exit_code != 0
    assert "no replayable event" in missing.output


def test_a_row_whose_worker_dies_every_time_stops_going_out_and_its_events_fail(client, runtime, hubspot_connection):
    assert post(client, [email_event(1), email_event(2)]).status_code == 200
    for _ in range(defaults.OUTBOX_MAX_DELIVERIES):      # each delivery lost (the worker killed every time)
        relay.drain(runtime, lease_seconds=0)
        Queue(defaults.QUEUE_NAME, connection=runtime.redis()).empty()
    assert count(runtime, Outbox, EVENT_ROWS, Outbox.attempts == defaults.OUTBOX_MAX_DELIVERIES) == 1
    assert relay.drain(runtime, lease_seconds=0) == 0    # not handed out again
    assert event_states(runtime) == [("failed", 0), ("failed", 0)]
    assert count(runtime, Outbox, EVENT_ROWS, Outbox.done_at.is_(None)) == 0

    assert CliRunner().invoke(hub_cli, ["replay", "--failed"]).output.strip() == "requeued: 2"
    run_pipeline(runtime)
    assert event_states(runtime) == [("processed", 1), ("processed", 1)]
    assert count(runtime, Contact) == 2
