"""Where the tests find PostgreSQL and Redis (real services), or the embedded default.

HUB_TEST_DATABASE_URL / HUB_TEST_REDIS_URL choose explicitly; otherwise the local services are
used when they answer and SQLite + embedded Redis when they do not. HUB_REQUIRE_SERVICES=1 (set
by .ci/run) turns "service absent" into a failure instead of a skip.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

PG_ADMIN_URL = os.environ.get("HUB_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
LOCAL_REDIS_URL = "redis://127.0.0.1:6379"


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def require(condition: bool, what: str) -> None:
    if condition:
        return
    if os.environ.get("HUB_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is required (HUB_REQUIRE_SERVICES=1) but not available")
    pytest.skip(f"{what} not available")


def postgres_available() -> bool:
    return port_open("127.0.0.1", 5432)


def redis_available() -> bool:
    return port_open("127.0.0.1", 6379)


def claim_redis_db() -> int:
    """Claim one of databases 1..15 of the local Redis, so concurrent test runs do not collide."""
    import redis

    conn = redis.Redis.from_url(LOCAL_REDIS_URL + "/0", socket_timeout=2)
    for index in range(1, 16):
        if conn.set(f"hub_test_claim:{index}", os.getpid(), nx=True, ex=3600):
            return index
    raise RuntimeError("all 15 test Redis databases are claimed")


def release_redis_db(index: int) -> None:
    import redis

    redis.Redis.from_url(LOCAL_REDIS_URL + "/0", socket_timeout=2).delete(f"hub_test_claim:{index}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A redis-server the test starts and stops itself."""

    def __init__(self, tmp_path):
        self.binary = shutil.which("redis-server")
        self.port = free_port()
        self.dir = str(tmp_path)
        self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while not port_open("127.0.0.1", self.port):
            if time.time() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None
