"""Operations endpoints and logs: /healthz, /readyz naming the failed dependency, /metrics counters
that move with real deliveries (and keep counting while Redis is down), masked structured logs."""
from __future__ import annotations

import io
import json
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hub import logs
from hub.app import create_app
from hub.runtime import Runtime
from tests import services
from tests.conftest import HUBSPOT_APP_SECRET, make_runtime, run_pipeline
from tests.live_server import property_change
from hub.sandbox.signing import hubspot_v3_headers
from hub.sync import relay
from hub.sync.worker import run_burst

URL = "http://localhost/webhooks/hubspot"
EMAIL = "jane.doe@newco.example.com"
PHONE = "+1 617 555 0101"
TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    values = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def value(values: dict, name: str, **labels) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def post_hubspot(client, items: list[dict], secret: str = HUBSPOT_APP_SECRET):
    body = json.dumps(items).encode()
    return client.post("/webhooks/hubspot", data=body, headers=hubspot_v3_headers(secret, "POST", URL, body))


def email_event(n: int, email: str = "") -> dict:
    return property_change(7000 + n, "email", email or f"person{n}@example.com", 880000 + n, 1764093860000 + n)


@pytest.fixture
def own_redis_runtime(monkeypatch, tmp_path, database_url, redis_server):
    """A runtime whose Redis is a server this test can stop."""
    return make_runtime(monkeypatch, tmp_path, database_url, redis_server.url)


def outbox_not_done(runtime) -> int:
    from sqlalchemy import func, select

    from hub.db import transaction
    from hub.models import Outbox

    with transaction(runtime.engine) as session:
        return session.scalar(select(func.count()).select_from(Outbox).where(Outbox.done_at.is_(None)))


def closed_port_database_url() -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:{services.free_port()}/hub"


# --- health and readiness --------------------------------------------------------------------------

def test_healthz_answers_without_dependencies(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_readyz_ok_when_database_and_redis_answer(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.json
    assert response.json == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


def test_readyz_names_redis_when_it_is_down(own_redis_runtime, redis_server):
    client = create_app(runtime=own_redis_runtime).test_client()
    assert client.get("/readyz").status_code == 200
    redis_server.stop()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json == {"status": "unavailable", "failed": ["redis"],
                             "checks": {"database": "ok", "redis": "unavailable"}}
    redis_server.start()
    assert client.get("/readyz").status_code == 200


def test_readyz_names_the_database_when_it_is_down(runtime):
    down = Runtime.from_env({"HUB_DATABASE_URL": closed_port_database_url()})
    response = create_app(runtime=down).test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["failed"] == ["database"]
    assert response.json["checks"] == {"database": "unavailable", "redis": "ok"}


# --- metrics -------------------------------------------------------------------------------------

def test_counters_move_with_deliveries_duplicates_and_rejections(client, hubspot_connection):
    before = scrape(client)
    items = [email_event(1), email_event(2)]
    assert post_hubspot(client, items).status_code == 200
    assert post_hubspot(client, items).json == {"accepted": 0, "duplicates": 2}
    assert post_hubspot(client, [email_event(3)], secret="not-the-app-secret").status_code == 401
    after = scrape(client)
    assert value(after, "hub_events_received_total", source="hubspot") - \
        value(before, "hub_events_received_total", source="hubspot") == 2
    assert value(after, "hub_events_deduped_total", source="hubspot") - \
        value(before, "hub_events_deduped_total", source="hubspot") == 2
    assert value(after, "hub_events_rejected_total", source="hubspot", reason="bad_signature") - \
        value(before, "hub_events_rejected_total", source="hubspot", reason="bad_signature") == 1
    assert value(after, "hub_ingest_seconds_count", source="hubspot") - \
        value(before, "hub_ingest_seconds_count", source="hubspot") == 2
    assert value(after, "hub_outbox_pending") == 1          # one delivery stored, one outbox row


def test_queue_depth_and_processing_latency(client, runtime, hubspot_connection):
    assert post_hubspot(client, [email_event(1), email_event(2)]).status_code == 200
    assert relay.drain(runtime) == 1
    queued = scrape(client)
    assert value(queued, "hub_queue_depth") == 1
    run_burst(runtime)
    run_pipeline(runtime)
    done = scrape(client)
    assert value(done, "hub_queue_depth") == 0
    assert value(done, "hub_outbox_pending") == outbox_not_done(runtime)     # other jobs' rows may wait
    assert value(done, "hub_processing_seconds_count") - value(queued, "hub_processing_seconds_count") == 2
    assert value(done, "hub_events_processed_total", status="processed") - \
        value(queued, "hub_events_processed_total", status="processed") == 2


def test_requests_keep_counting_and_metrics_answer_while_redis_is_down(own_redis_runtime, redis_server,
                                                                        hubspot_connection):
    client = create_app(runtime=own_redis_runtime).test_client()
    before = scrape(client)
    redis_server.stop()
    assert post_hubspot(client, [email_event(1), email_event(2), email_event(3)]).status_code == 200
    after = scrape(client)                  # answers, with the counters, although Redis is down
    assert value(after, "hub_events_received_total", source="hubspot") - \
        value(before, "hub_events_received_total", source="hubspot") == 3
    assert value(after, "hub_outbox_pending") == 1


def test_database_down_is_counted_as_a_rejection(runtime, hubspot_connection):
    down = Runtime.from_env({"HUB_DATABASE_URL": closed_port_database_url()})
    client = create_app(runtime=down).test_client()
    before = scrape(client)
    assert post_hubspot(client, [email_event(1)]).status_code == 503
    after = scrape(client)
    assert value(after, "hub_events_rejected_total", source="hubspot", reason="database_unavailable") - \
        value(before, "hub_events_rejected_total", source="hubspot", reason="database_unavailable") == 1


# --- logs ----------------------------------------------------------------------------------------

@pytest.fixture
def json_logs():
    """Capture what the hub's JSON log handler writes (root logger, INFO and up)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_logs_never_hold_tokens_or_full_personal_data(client, runtime, hubspot_connection, json_logs,
                                                      monkeypatch):
    from hub.sync import processing

    real_process_event = processing.process_event
    failing_object = 7009

    def process_event(session, rt, event, parsed=None):
        if event.payload.get("objectId") == failing_object:
            # A vendor error message echoing the request: personal data and the credential.
            raise RuntimeError(f"HubSpot refused {{'email': '{EMAIL}', 'phone': '{PHONE}'}} "
                               f"Authorization: Bearer {TOKEN} access_token={TOKEN}")
        return real_process_event(session, rt, event, parsed)

    monkeypatch.setattr(processing, "process_event", process_event)
    items = [email_event(1, email=EMAIL), property_change(7001, "phone", PHONE, 1, 1764093870000),
             email_event(9, email=EMAIL)]
    assert post_hubspot(client, items).status_code == 200
    relay.drain(runtime)
    run_burst(runtime)                                  # one pass: two applied, one failed once
    output = json_logs.getvalue()
    assert "event" in output and "RuntimeError" in output
    assert "j***@newco.example.com" in output           # the failure was logged with its message, masked
    for secret in (EMAIL, TOKEN, PHONE, "6175550101"):
        assert secret not in output
    for line in output.splitlines():
        json.loads(line)                                # every record is one JSON object
