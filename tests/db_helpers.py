"""Helpers for tests about what reaches the database: the statements sent, and two transactions
racing for one row."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator

from sqlalchemy import event

from hub.db import transaction


@contextmanager
def statements_sent(engine, matches: Callable[[str], bool]) -> Iterator[list[str]]:
    """The statements the engine sends inside the block for which `matches(sql)` is true."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if matches(statement):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def second_waits_for_first(engine, first: Callable, second: Callable) -> None:
    """Run `first(session)` in a transaction held open, then `second(session)` in another one;
    assert the second waits for the first's uncommitted write (a unique index on PostgreSQL, the
    write lock on SQLite), then let both finish."""
    first_done, release, second_done = threading.Event(), threading.Event(), threading.Event()

    def run_first() -> None:
        with transaction(engine) as session:
            first(session)
            first_done.set()
            release.wait(10)

    def run_second() -> None:
        with transaction(engine) as session:
            second(session)
        second_done.set()

    threads = [threading.Thread(target=run_first)]
    threads[0].start()
    assert first_done.wait(10)
    threads.append(threading.Thread(target=run_second))
    threads[1].start()
    assert not second_done.wait(0.3)
    release.set()
    for thread in threads:
        thread.join(10)
    assert second_done.is_set()
