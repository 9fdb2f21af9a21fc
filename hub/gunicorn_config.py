"""gunicorn settings for the hub: `gunicorn -c python:hub.gunicorn_config wsgi:app`.

Command-line flags override any of these (`-w 4`, `--bind ...`, `--access-logfile -`). The worker
class and thread count are the ones bench/ingest measured for the receiver; see README "Production".
"""
import errno
import os
import socket

from gunicorn.glogging import Logger

from hub import defaults
from hub.logs import JsonFormatter

bind = "0.0.0.0:" + (os.environ.get("HUB_PORT") or str(defaults.DEFAULT_PORT))
workers = 2
worker_class = "gthread"
threads = 16                    # more deliveries share each group commit (hub.store); bench/ingest
timeout = 30
graceful_timeout = 20
keepalive = 5                   # vendors and reverse proxies reuse connections
control_socket_disable = True   # several hubs on one machine must not share ~/.gunicorn/gunicorn.ctl
# Each worker binds its own socket (SO_REUSEPORT) and the kernel spreads new connections over them.
# With one shared socket, whichever worker wakes first accepts: keep-alive connections piled up on
# one worker (25 of 32, even 32 of 32 in bench/ingest) while the other idled. See on_starting.
reuse_port = True


class JsonLogger(Logger):
    """gunicorn's own lines in the hub's JSON shape. Access lines only with --access-logfile: a
    disabled access log costs nothing per request (a filtered one still formats every line)."""

    def setup(self, cfg):
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(JsonFormatter())


logger_class = JsonLogger


def child_exit(server, worker):
    """Drop a dead worker's live gauges from the multiprocess metrics (counters are kept)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_starting(server):
    """SO_REUSEPORT only for TCP addresses gunicorn binds itself: a unix socket would be unlinked and
    bound again by each worker, port 0 would give each worker a port of its own, and inherited
    (systemd) sockets are shared as they are. A TCP port already taken is refused here, before any
    worker binds: with SO_REUSEPORT a second hub on the same port would otherwise quietly take half
    of the first one's deliveries."""
    addresses = server.cfg.address
    if not server.cfg.reuse_port:
        return
    if os.environ.get("LISTEN_FDS") or not all(isinstance(address, tuple) and address[1] for address in addresses):
        server.cfg.set("reuse_port", False)
        return
    for address in addresses:
        _refuse_taken(address)
    server.log.info("Each worker listens on %s (SO_REUSEPORT)",
                    ", ".join(f"{host}:{port}" for host, port in addresses))


def _refuse_taken(address: tuple) -> None:
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)      # as gunicorn binds (TIME_WAIT is fine)
        probe.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise SystemExit(f"gunicorn: {address[0]}:{address[1]} is already in use") from None
        raise
    finally:
        probe.close()
