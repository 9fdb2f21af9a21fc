"""gunicorn settings for the hub: `gunicorn -c python:hub.gunicorn_config wsgi:app`.

Command-line flags override any of these (`-w 4`, `--bind ...`). The worker class and thread count
are the ones bench/ingest measured fastest for the receiver; see README "Production".
"""
import os

from hub import defaults
from hub.logs import gunicorn_logconfig

bind = "0.0.0.0:" + (os.environ.get("HUB_PORT") or str(defaults.DEFAULT_PORT))
workers = 2
worker_class = "gthread"
threads = 4
timeout = 30
graceful_timeout = 20
keepalive = 5                   # vendors and reverse proxies reuse connections
control_socket_disable = True   # several hubs on one machine must not share ~/.gunicorn/gunicorn.ctl
logconfig_dict = gunicorn_logconfig()


def child_exit(server, worker):
    """Drop a dead worker's live gauges from the multiprocess metrics (counters are kept)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
