"""Log masking: personal data and secrets never reach a log line; addresses, ports and dates stay readable."""
from __future__ import annotations

import pytest

from hub.logs import mask


@pytest.mark.parametrize("text, hidden", [
    ("call +1 (617) 555-0101 now", "555-0101"),
    ("phone:6175550101", "6175550101"),
    ("tel 617.555.0101", "617.555.0101"),
    ("+44 20 7946 0958", "7946 0958"),
    ("mail jane.doe@newco.example.com", "jane.doe"),
    ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
    ("access_token=s3cr3t-value", "s3cr3t-value"),
])
def test_personal_data_and_secrets_are_masked(text, hidden):
    assert hidden not in mask(text)


@pytest.mark.parametrize("text", [
    "Listening at: http://0.0.0.0:18123 (13339)",
    "127.0.0.1 - - GET /healthz",
    "occurred 2026-11-26 00:19:56 UTC",
    "event 1246965 stored",
    "job 225d29d7-2f7d-48e2-895b-123456789012 done",
])
def test_addresses_ports_dates_and_short_ids_stay_readable(text):
    assert mask(text) == text
