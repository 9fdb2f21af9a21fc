"""gunicorn settings for the hub: `gunicorn -c python:hub.gunicorn_config wsgi:app`.

Command-line flags override any of these (`-w 4`, `--bind ...`, `--access-logfile -`). The worker
class and thread count are the ones bench/ingest measured for the receiver; see README "Production".
"""
import os

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
