"""hub.db: short transactions, and a job's transactions sharing one pooled connection."""
from __future__ import annotations

import pytest
from sqlalchemy import event, select

from hub.db import one_connection_per_job, transaction
from hub.models import Workspace


def add_workspace(runtime, name: str, fail: bool = False) -> None:
    with transaction(runtime.engine) as session:
        session.add(Workspace(name=name, api_key_hash=f"hash-{name}"))
        session.flush()
        if fail:
            raise RuntimeError("this one rolls back alone")


def test_a_jobs_transactions_share_one_connection_and_each_commits_on_its_own(runtime):
    checkouts: list[int] = []

    def count_checkout(dbapi_connection, record, proxy):
        checkouts.append(id(dbapi_connection))

    event.listen(runtime.engine, "checkout", count_checkout)
    try:
        with one_connection_per_job(runtime.engine):
            add_workspace(runtime, "first")
            add_workspace(runtime, "second")
            with pytest.raises(RuntimeError):
                add_workspace(runtime, "third", fail=True)
            with runtime.engine.connect() as outside_the_job:      # another connection sees the commits now
                names = set(outside_the_job.scalars(select(Workspace.name)))
    finally:
        event.remove(runtime.engine, "checkout", count_checkout)
    assert {"first", "second"} <= names and "third" not in names
    assert len(checkouts) == 2          # the job's one connection, and the outside look
