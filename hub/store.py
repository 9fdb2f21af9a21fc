"""The durable write of the request path: events, their dedupe keys and an outbox row, in one transaction.

`ingest` returns only after the transaction holding the delivery's events and its outbox row has
committed, so a receiver never answers before its events are durable. Two ways to write the rows:
- PostgreSQL: group commit. Deliveries that arrive in one process while a write is in flight wait
  for it, then the next of them writes all waiting deliveries as ONE statement (events from a JSON
  recordset, then one outbox row per delivery and workspace built from what was inserted) on a
  connection kept for this purpose in autocommit mode: a single statement is its own transaction,
  and PostgreSQL sends its answer after the commit. A delivery costs a share of one round trip and
  one commit instead of a pool check-out, a ping, BEGIN, the statement and COMMIT;
- other databases (the embedded SQLite default): a Core INSERT .. ON CONFLICT DO NOTHING RETURNING,
  then the outbox rows, in one transaction per delivery.
Rows are inserted in unique-key order, so concurrent writes of overlapping batches take their index
locks in the same order (no deadlock); an outbox row lists its events in the order they happened,
which is the order workers apply them.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from datetime import datetime

import orjson
import psycopg
from sqlalchemy import event, insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from hub import defaults
from hub.models import Event, Outbox, utcnow
from webhooks.common import IncomingEvent

logger = logging.getLogger(__name__)

# Core tables: the request path needs no identity map or unit of work (the ORM bulk path costs
# several times the CPU; see bench/ingest).
EVENTS = Event.__table__
OUTBOX = Outbox.__table__
PROCESS_JOB = "process_events"               # Outbox.job of live events (webhooks, forms, polls)
BULK_PROCESS_JOB = "process_bulk"             # ... of records a backfill stores (hub.sync.relay: the bulk queue)
QUERY_CANCELED = "57014"                       # statement_timeout
CONNECTION_GONE_STATES = ("08", "57P")         # connection exception; admin/crash shutdown

# One statement for a group of deliveries. `delivery` numbers the deliveries of the group: each
# pending delivery gets its own outbox row per workspace, created when its first event was received.
_PG_INGEST = """
WITH incoming AS (
    SELECT * FROM json_to_recordset(%(rows)s::json) AS r(
        delivery integer, workspace_id varchar, source varchar, kind varchar, dedupe_key varchar,
        payload json, received_at timestamptz, occurred_at timestamptz, status varchar, position integer,
        job varchar)
), inserted AS (
    INSERT INTO event (workspace_id, source, kind, dedupe_key, payload, received_at, occurred_at, status, attempts)
    SELECT workspace_id, source, kind, dedupe_key, payload, received_at, occurred_at, status, 0
    FROM incoming ORDER BY workspace_id, dedupe_key
    ON CONFLICT (workspace_id, dedupe_key) DO NOTHING
    RETURNING id, workspace_id, dedupe_key
), queued AS (
    INSERT INTO outbox (workspace_id, job, payload, created_at, available_at, attempts)
    SELECT incoming.workspace_id, incoming.job,
           json_build_object('event_ids', json_agg(inserted.id
               ORDER BY incoming.occurred_at IS NULL, incoming.occurred_at, incoming.position)),
           min(incoming.received_at), min(incoming.received_at), 0
    FROM inserted JOIN incoming USING (workspace_id, dedupe_key)
    WHERE incoming.status = 'pending'
    GROUP BY incoming.delivery, incoming.workspace_id, incoming.job
)
SELECT id, workspace_id, dedupe_key FROM inserted
"""


@dataclass
class IngestResult:
    accepted: list[int] = field(default_factory=list)   # ids of newly stored events
    duplicates: int = 0


def _lock_order(row: dict) -> tuple[str, str]:
    return row["workspace_id"], row["dedupe_key"]


def _processing_order(row: dict) -> tuple:
    occurred = row["occurred_at"]
    return (occurred is None, occurred.timestamp() if occurred else 0.0, row["position"])


def ingest(engine: Engine, routed: list[tuple[str, IncomingEvent]], status: str = "pending",
           job: str = PROCESS_JOB) -> IngestResult:
    """Store every (workspace_id, event); duplicates change nothing. Commits before returning.

    New pending events get one outbox row per workspace (Outbox.job `job`), so the relay can hand
    them to a worker.
    Database errors are SQLAlchemy's (DBAPIError and its subclasses) on every database.
    """
    result = IngestResult()
    if not routed:
        return result
    unique = _unique_events(routed, result)
    if engine.dialect.name == "postgresql":
        result.accepted = _group_writer(engine).write(unique, status, utcnow(), job)
    else:
        now = utcnow()
        rows = [{"workspace_id": workspace_id, "source": event.source, "kind": event.kind,
                 "dedupe_key": event.dedupe_key, "payload": event.payload, "received_at": now,
                 "occurred_at": event.occurred_at, "status": status, "attempts": 0, "position": position}
                for position, workspace_id, event in unique]
        with engine.begin() as conn:           # commits on success, rolls back on any error
            result.accepted = _write_core(conn, rows, status, now, job)
    result.duplicates += len(unique) - len(result.accepted)
    return result


def _unique_events(routed: list[tuple[str, IncomingEvent]], result: IngestResult) -> list[tuple]:
    """(position, workspace_id, event) for each event; the same event twice in one delivery is a duplicate."""
    unique, seen = [], set()
    for position, (workspace_id, event) in enumerate(routed):
        key = (workspace_id, event.dedupe_key)
        if key in seen:
            result.duplicates += 1
            continue
        seen.add(key)
        unique.append((position, workspace_id, event))
    return unique


def _write_core(conn: Connection, rows: list[dict], status: str, now, job: str) -> list[int]:
    rows.sort(key=_lock_order)
    stmt = (sqlite_insert(EVENTS).on_conflict_do_nothing(index_elements=["workspace_id", "dedupe_key"])
            .returning(EVENTS.c.id, EVENTS.c.workspace_id, EVENTS.c.dedupe_key))
    # One INSERT .. ON CONFLICT DO NOTHING RETURNING for the batch (SQLAlchemy "insertmanyvalues").
    inserted = conn.execute(stmt, [{k: v for k, v in row.items() if k != "position"} for row in rows]).all()
    if status == "pending" and inserted:
        conn.execute(insert(OUTBOX), _outbox_rows(rows, inserted, now, job))
    return [event_id for event_id, _, _ in inserted]


def _outbox_rows(rows: list[dict], inserted, now, job: str) -> list[dict]:
    """One outbox row per workspace listing its new events in the order they happened."""
    by_key = {_lock_order(row): row for row in rows}
    by_workspace: dict[str, list[tuple]] = {}
    for event_id, workspace_id, dedupe_key in inserted:
        order = _processing_order(by_key[(workspace_id, dedupe_key)])
        by_workspace.setdefault(workspace_id, []).append((order, event_id))
    return [
        {"workspace_id": ws, "job": job,
         "payload": {"event_ids": [event_id for _, event_id in sorted(entries)]},
         "created_at": now, "available_at": now, "attempts": 0}
        for ws, entries in by_workspace.items()
    ]


# --- PostgreSQL: group commit -------------------------------------------------------------------------

class _Delivery:
    """One `ingest` call waiting for the commit that holds its rows.

    `wake` is held from the start; whoever ends the wait releases it once: the writer whose group
    committed the delivery, or the writer handing over the turn to write next.
    """

    __slots__ = ("events", "status", "received_at", "job", "ids", "error", "done", "turn", "wake")

    def __init__(self, events: list[tuple], status: str, received_at: datetime, job: str):
        self.events = events            # (position, workspace_id, IncomingEvent)
        self.status = status
        self.job = job                  # Outbox.job of its outbox rows
        self.received_at = received_at
        self.ids: list[int] = []
        self.error: BaseException | None = None
        self.done = False
        self.turn = False               # this caller writes the next group
        self.wake = threading.Lock()
        self.wake.acquire()

    def outcome(self) -> list[int]:
        if self.error is not None:
            raise self.error
        return self.ids


class _GroupWriter:
    """Writes the deliveries of one process to one PostgreSQL database, a group at a time.

    No thread of its own: the first caller to find no write in flight writes every delivery waiting
    (its own included); the others sleep until their delivery is done or the turn to write passes to
    them (the writer hands it to the oldest waiting delivery). Each sleeper is woken exactly once, by
    its own lock, so a commit wakes only the callers it concerns. Each caller returns only after the
    commit that holds its delivery.
    """

    def __init__(self, engine: Engine):
        self._engine = weakref.ref(engine)       # the registry's key: the writer must not keep it alive
        self._mutex = threading.Lock()           # guards _pending, _writing, the turn and the connection
        self._pending: list[_Delivery] = []
        self._writing = False
        self._conn: psycopg.Connection | None = None     # autocommit; only the writer uses it
        self._drop_connection = False

    def write(self, events: list[tuple], status: str, received_at: datetime, job: str = PROCESS_JOB) -> list[int]:
        delivery = _Delivery(events, status, received_at, job)
        with self._mutex:
            self._pending.append(delivery)
            leading = not self._writing
            self._writing = True
        if not leading:
            self._wait(delivery, time.monotonic() + defaults.INGEST_WAIT_SECONDS)
        while not delivery.done:                 # this caller writes until its own delivery is in
            self._write_next_group(delivery)
        return delivery.outcome()

    def _write_next_group(self, own: _Delivery) -> None:
        with self._mutex:
            group = self._take_group()
        finished = False
        try:
            self._write_group(group)
            finished = True
        finally:
            with self._mutex:
                if self._drop_connection:
                    self._close_connection()
                if not finished and own in self._pending:
                    self._pending.remove(own)    # this caller leaves with the exception
                if own.done or not finished:
                    self._hand_over_turn()
            for delivery in group:
                if delivery is not own:
                    delivery.wake.release()

    def _hand_over_turn(self) -> None:
        """The oldest waiting delivery's caller writes next; with none waiting, no write is in flight."""
        if self._pending:
            successor = self._pending[0]
            successor.turn = True
            successor.wake.release()
        else:
            self._writing = False

    def _wait(self, delivery: _Delivery, deadline: float) -> None:
        """Sleep until done or our turn. Past the deadline a delivery still queued leaves unwritten (the
        vendor retries); one already in a write in flight waits for that write's outcome."""
        while True:
            delivery.wake.acquire(timeout=max(deadline - time.monotonic(), 0))
            with self._mutex:
                if delivery.done or delivery.turn:
                    return
                if delivery in self._pending:
                    self._pending.remove(delivery)
                    raise PoolTimeoutError(f"no commit within {defaults.INGEST_WAIT_SECONDS}s")
            deadline = time.monotonic() + defaults.INGEST_WAIT_SECONDS

    def _take_group(self) -> list[_Delivery]:
        """The waiting deliveries, oldest first, up to INGEST_GROUP_MAX_EVENTS (at least one)."""
        group, events = [], 0
        while self._pending and (not group or events + len(self._pending[0].events) <= defaults.INGEST_GROUP_MAX_EVENTS):
            delivery = self._pending.pop(0)
            group.append(delivery)
            events += len(delivery.events)
        return group

    def _write_group(self, group: list[_Delivery]) -> None:
        """Every delivery of the group ends done, with its ids or the error that stopped it."""
        try:
            self._write_together(group)
        except psycopg.Error as exc:
            if len(group) > 1 and not _connection_lost(exc) and exc.sqlstate != QUERY_CANCELED:
                for delivery in group:           # one bad delivery must not fail the others
                    self._write_group([delivery])
                return
            self._fail(group, self._wrap(exc))
        except DBAPIError as exc:                # raised wrapped already (no connection)
            self._fail(group, exc)
        except BaseException as exc:
            self._fail(group, exc)
            raise

    @staticmethod
    def _fail(group: list[_Delivery], exc: BaseException) -> None:
        for delivery in group:
            delivery.error, delivery.done = exc, True

    def _write_together(self, group: list[_Delivery]) -> None:
        owners, rows_json = _group_rows(group)
        params = {"rows": rows_json}
        for delivery in group:
            delivery.ids = []
        for event_id, workspace_id, dedupe_key in self._execute(params):
            owners[(workspace_id, dedupe_key)].ids.append(event_id)
        for delivery in group:
            delivery.done = True

    def _execute(self, params: dict) -> list[tuple]:
        """Run the statement; a kept connection found dead is replaced once (the write is
        idempotent: a statement that did commit before the connection broke finds duplicates)."""
        reused = self._conn is not None
        conn = self._connection()
        try:
            return conn.execute(_PG_INGEST, params, prepare=True).fetchall()
        except psycopg.Error as exc:
            if not _connection_lost(exc, conn):
                raise
            self._close_connection()
            if not reused:
                raise
            logger.info("ingest connection lost (%s); reconnecting once", type(exc).__name__)
        return self._connection().execute(_PG_INGEST, params, prepare=True).fetchall()

    def _connection(self) -> psycopg.Connection:
        """The kept connection, or a new one from the engine (its connect timeout and arguments)."""
        if self._conn is None or self._conn.closed:
            fairy = self._engine().raw_connection()      # connection errors arrive wrapped by SQLAlchemy
            fairy.detach()                           # ours now: the pool neither counts nor resets it
            conn = fairy.dbapi_connection
            try:
                conn.autocommit = True
                conn.execute(f"SET statement_timeout = {int(defaults.INGEST_STATEMENT_TIMEOUT_SECONDS * 1000)}")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _close_connection(self) -> None:
        self._drop_connection = False
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Drop the kept connection (now, or when the write in flight ends); the next write opens another."""
        with self._mutex:
            if self._writing:
                self._drop_connection = True
            else:
                self._close_connection()

    def _wrap(self, exc: psycopg.Error) -> BaseException:
        """As SQLAlchemy would raise it (OperationalError etc.), without parameters (personal data)."""
        return DBAPIError.instance("INSERT INTO event ...", None, exc, psycopg.Error, hide_parameters=True,
                                   connection_invalidated=_connection_lost(exc), dialect=self._engine().dialect)


def _connection_lost(exc: psycopg.Error, conn: psycopg.Connection | None = None) -> bool:
    """The connection is gone (client-side failure, SQLSTATE class 08, or the server shutting down)."""
    if conn is not None and (conn.closed or conn.broken):
        return True
    if exc.sqlstate is None:
        return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))
    return exc.sqlstate.startswith(CONNECTION_GONE_STATES)


def _group_rows(group: list[_Delivery]) -> tuple[dict, str]:
    """The group's rows as JSON for the statement, and which delivery owns each (workspace, key).

    An event in two deliveries of one group belongs to the first: the second counts it as a duplicate.
    """
    owners: dict[tuple[str, str], _Delivery] = {}
    out = []
    for number, delivery in enumerate(group):
        received, status, job = delivery.received_at, delivery.status, delivery.job
        for position, workspace_id, event in delivery.events:
            key = (workspace_id, event.dedupe_key)
            if key in owners:
                continue
            owners[key] = delivery
            out.append({"delivery": number, "workspace_id": workspace_id, "source": event.source,
                        "kind": event.kind, "dedupe_key": event.dedupe_key, "payload": event.payload,
                        "received_at": received, "occurred_at": event.occurred_at,
                        "status": status, "position": position, "job": job})
    return owners, rows_json(out)


def rows_json(rows: list[dict]) -> str:
    """JSON text of the rows, datetimes as ISO 8601. orjson is several times faster than json on the request
    path; a payload integer wider than 64 bits (orjson refuses it) takes the standard library's path."""
    try:
        return orjson.dumps(rows).decode()
    except TypeError:
        return json.dumps(rows, separators=(",", ":"), default=datetime.isoformat)


_writers: "weakref.WeakKeyDictionary[Engine, _GroupWriter]" = weakref.WeakKeyDictionary()
_writers_lock = threading.Lock()
_inherited: list[_GroupWriter] = []     # a forked child must never close its parent's connections


def _group_writer(engine: Engine) -> _GroupWriter:
    writer = _writers.get(engine)
    if writer is None:
        with _writers_lock:
            writer = _writers.get(engine)
            if writer is None:
                writer = _writers[engine] = _GroupWriter(engine)
                event.listen(engine, "engine_disposed", lambda _conn: writer.close())
    return writer


def _forget_inherited_writers() -> None:
    _inherited.extend(_writers.values())
    _writers.clear()


os.register_at_fork(after_in_child=_forget_inherited_writers)
