"""Starting RQ workers for the hub's queue."""
from __future__ import annotations

import importlib
import time

from rq import Queue, SimpleWorker, Worker

from hub import defaults

# Job modules imported once in the worker, so each forked work horse starts with them loaded
# instead of importing them again for every job.
JOB_MODULES = ("hub.sync.jobs", "hub.sync.processing", "hub.sync.push", "hub.sync.engine",
               "hub.sync.polling", "hub.sync.deletions", "hub.rules.jobs", "webhooks.registry")


def preload_job_modules() -> None:
    for name in JOB_MODULES:
        importlib.import_module(name)


def make_worker(runtime, simple: bool = False) -> Worker:
    """A forking worker (production) or a SimpleWorker (tests, one-process runs)."""
    preload_job_modules()
    connection = runtime.redis()
    cls = SimpleWorker if simple else Worker
    return cls([Queue(name, connection=connection) for name in defaults.QUEUE_NAMES], connection=connection)


def run_burst(runtime) -> bool:
    """Process everything queued, in this process, then return."""
    return make_worker(runtime, simple=True).work(burst=True, with_scheduler=False)


def run_until_idle(runtime, rounds: int = 20) -> None:
    """Relay the outbox and run the queued jobs in this process until nothing is left (tests, `hub demo`)."""
    from hub.sync import relay

    queues = relay.queues_for(runtime.redis())
    for _ in range(rounds):
        moved = relay.drain(runtime, queues)
        if not moved and not any(queue.count for queue in queues.values()):   # a full queue moves nothing
            return
        run_burst(runtime)
    raise RuntimeError(f"work still queued after {rounds} rounds")


# Periodic jobs: always due again later, so "settled" means no other work is waiting.
PERIODIC_JOBS = ("rules_decay", "rules_sla", "sync_poll")


def run_until_settled(runtime, limit_seconds: float = 15.0, poll_seconds: float = 0.1) -> float:
    """Run relay + worker until no foreground outbox row waits, including rows held back by a coalescing
    window (periodic jobs excluded); returns the seconds taken. Tests and `hub demo`."""
    from sqlalchemy import func, select

    from hub.db import transaction
    from hub.models import Outbox

    started = time.monotonic()
    while True:
        run_until_idle(runtime)
        with transaction(runtime.engine) as session:
            waiting = session.scalar(select(func.count()).select_from(Outbox).where(
                Outbox.done_at.is_(None), Outbox.job.not_in(PERIODIC_JOBS)))
        if not waiting:
            return time.monotonic() - started
        if time.monotonic() - started > limit_seconds:
            raise RuntimeError(f"{waiting} outbox rows still waiting after {limit_seconds:.0f} s")
        time.sleep(poll_seconds)
