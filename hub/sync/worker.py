"""Starting RQ workers for the hub's queue."""
from __future__ import annotations

import importlib

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
    return cls([Queue(defaults.QUEUE_NAME, connection=connection)], connection=connection)


def run_burst(runtime) -> bool:
    """Process everything queued, in this process, then return."""
    return make_worker(runtime, simple=True).work(burst=True, with_scheduler=False)
