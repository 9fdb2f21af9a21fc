"""A real HTTP server around the app, for tests that need concurrent requests over sockets."""
from __future__ import annotations

import copy
import json
import threading
from contextlib import contextmanager
from typing import Iterator

from werkzeug.serving import make_server

from tests.conftest import HUBSPOT_APP_SECRET, fixture_json
from hub.sandbox.signing import hubspot_v3_headers

PROPERTY_CHANGE = fixture_json("hubspot/contact.propertyChange__sample.json")[0]


@contextmanager
def serve(app) -> Iterator[str]:
    """Run `app` on a free local port with a thread per request; yields the base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


def property_change(object_id: int, name: str, value: str, event_id: int, occurred_at: int) -> dict:
    """One contact.propertyChange item, shaped like HubSpot's documented sample."""
    item = copy.deepcopy(PROPERTY_CHANGE)
    item.update(objectId=object_id, propertyName=name, propertyValue=value, eventId=event_id,
                occurredAt=occurred_at, attemptNumber=0, changeSource="CRM_UI", sourceId="userId:4567890")
    return item


def signed_hubspot_post(base_url: str, items: list[dict]) -> tuple[bytes, dict]:
    """Body and v3 headers for a POST of `items` to `base_url`/webhooks/hubspot."""
    body = json.dumps(items).encode()
    return body, hubspot_v3_headers(HUBSPOT_APP_SECRET, "POST", base_url + "/webhooks/hubspot", body)
