"""Engine and sessions: one engine per process, sessions as short transactions.

A job that runs many short transactions (one per event) can run them all on one pooled connection
(`one_connection_per_job`): the pool checks a connection out, and pings it, once per job instead of
once per transaction.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

_engines: dict[str, Engine] = {}
_job_connection: ContextVar = ContextVar("hub.db.job_connection", default=None)


def get_engine(url: str) -> Engine:
    """One engine (and pool) per URL per process."""
    engine = _engines.get(url)
    if engine is None:
        engine = _make_engine(url)
        _engines[url] = engine
    return engine


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(
        url,
        pool_size=10,
        max_overflow=10,
        pool_pre_ping=True,
        pool_timeout=5,
        connect_args={"connect_timeout": 5},
    )


def dispose_all() -> None:
    """Forget engines (after fork, or between tests)."""
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def insert_ignoring_duplicates(session, entity, index_elements: list[str], index_where=None, **values) -> bool:
    """INSERT ... ON CONFLICT (index_elements) DO NOTHING on PostgreSQL and SQLite: a row another
    transaction added first under the same unique key is kept, and nothing is raised. True if this
    row was added (PostgreSQL waits for a concurrent insert of the same key to commit or roll back)."""
    dialect_insert = pg_insert if is_postgres(session.get_bind()) else sqlite_insert
    statement = (dialect_insert(entity).values(**values)
                 .on_conflict_do_nothing(index_elements=index_elements, index_where=index_where)
                 .returning(*entity.__table__.primary_key.columns))
    return session.execute(statement).first() is not None


@contextmanager
def one_connection_per_job(engine: Engine) -> Iterator[None]:
    """Within this block, `transaction(engine)` runs on one connection (each still commits on its own)."""
    with engine.connect() as connection:
        token = _job_connection.set(connection)
        try:
            yield
        finally:
            _job_connection.reset(token)


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any error."""
    connection = _job_connection.get()
    bind = connection if connection is not None and connection.engine is engine else engine
    session = sessionmaker(bind=bind, expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
