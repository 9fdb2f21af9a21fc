"""Starting RQ workers for the hub's queue."""
from __future__ import annotations

from rq import Queue, SimpleWorker, Worker

from hub import defaults


def make_worker(runtime, simple: bool = False) -> Worker:
    """A forking worker (production) or a SimpleWorker (tests, one-process runs)."""
    connection = runtime.redis()
    cls = SimpleWorker if simple else Worker
    return cls([Queue(defaults.QUEUE_NAME, connection=connection)], connection=connection)


def run_burst(runtime) -> bool:
    """Process everything queued, in this process, then return."""
    return make_worker(runtime, simple=True).work(burst=True, with_scheduler=False)
