"""hub.gunicorn_config under a real gunicorn: each worker listens on a TCP port of its own socket
(SO_REUSEPORT, so the kernel spreads connections), a port already taken is refused instead of shared,
and a unix socket keeps gunicorn's single shared listener."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from tests.services import free_port

ROOT = Path(__file__).resolve().parent.parent
START_SECONDS = 30
APP = "bare_app:app"            # bench's trivial Flask app: no database, so only the config is tested


def gunicorn(bind: str, log_path: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUB_", "PROMETHEUS_"))}
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "python:hub.gunicorn_config", "--bind", bind, "--workers", "2",
         "--pythonpath", str(ROOT / "bench"), APP],
        cwd=str(ROOT), env=env, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


def listening_workers(process: subprocess.Popen, port: int) -> set[int]:
    """Pids of the gunicorn tree with a listening socket on `port`."""
    tree = [psutil.Process(process.pid)] + psutil.Process(process.pid).children(recursive=True)
    return {p.pid for p in tree for c in p.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def wait_for(condition, what: str):
    deadline = time.monotonic() + START_SECONDS
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_each_worker_listens_on_its_own_socket(tmp_path):
    port = free_port()
    server = gunicorn(f"127.0.0.1:{port}", tmp_path / "gunicorn.log")
    try:
        workers = wait_for(lambda: len(listening_workers(server, port)) == 2 and listening_workers(server, port),
                           "two listening workers")
        assert server.pid not in workers                   # the arbiter holds no shared listener
        answer = requests.post(f"http://127.0.0.1:{port}/webhooks/hubspot", timeout=10)
        assert answer.status_code == 200
    finally:
        stop(server)


def test_a_port_already_taken_is_refused_not_shared(tmp_path):
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)     # even a socket that would share it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = gunicorn(f"127.0.0.1:{port}", tmp_path / "gunicorn.log")
        try:
            assert server.wait(timeout=START_SECONDS) != 0
        finally:
            if server.poll() is None:
                stop(server)
    assert f"127.0.0.1:{port} is already in use" in (tmp_path / "gunicorn.log").read_text()


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="unix sockets")
def test_a_unix_socket_is_one_shared_listener(tmp_path):
    path = tmp_path / "hub.sock"
    server = gunicorn(f"unix:{path}", tmp_path / "gunicorn.log")
    try:
        wait_for(path.exists, "the unix socket")
        for _ in range(4):                                 # every connection is answered, whichever worker
            with socket.socket(socket.AF_UNIX) as client:
                client.settimeout(10)
                client.connect(str(path))
                client.sendall(b"POST /webhooks/hubspot HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                               b"Connection: close\r\n\r\n")
                assert client.recv(100).startswith(b"HTTP/1.1 200")
        assert "SO_REUSEPORT" not in (tmp_path / "gunicorn.log").read_text()
    finally:
        stop(server)
