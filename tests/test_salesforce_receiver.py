"""Salesforce Outbound Messages: org check, XML attacks, notification dedupe, the exact ACK, handlers."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from hub import admin
from tests.conftest import fixture_bytes
from tests.receiver_helpers import change, count, handled, nothing_stored, rows
from webhooks import salesforce

ORG_ID = "00D5g000004ABCDEA2"          # the OrganizationId in the fixtures
ACK = fixture_bytes("salesforce/notificationsResponse__ack.xml")
SOAP = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def connect(runtime, workspace, org_id=ORG_ID) -> str:
    created = admin.connect(runtime, workspace["workspace_id"], "salesforce", org_id, {"access_token": "x"},
                            {"instance_url": "https://example.my.salesforce.com"})
    return created["webhook_url"].split("://", 1)[1].split("/", 1)[1]


@pytest.fixture
def outbound_path(runtime, workspace):
    return "/" + connect(runtime, workspace)


def post(client, path: str, name_or_body):
    body = name_or_body if isinstance(name_or_body, bytes) else fixture_bytes(f"salesforce/{name_or_body}")
    return client.post(path, data=body, headers=SOAP)


# --- the ACK ---------------------------------------------------------------------------------------

def test_ack_is_the_documented_envelope_and_comes_with_the_stored_rows(client, runtime, outbound_path):
    response = post(client, outbound_path, "notifications__lead-two.xml")
    assert response.status_code == 200
    assert response.data == ACK
    assert response.mimetype == "text/xml"
    assert count(runtime) == 2


def test_redelivered_message_is_acknowledged_and_stored_once(client, runtime, outbound_path):
    assert post(client, outbound_path, "notifications__lead-two.xml").data == ACK
    again = post(client, outbound_path, "notifications__lead-two.xml")
    assert again.status_code == 200 and again.data == ACK
    assert count(runtime) == 2


def test_duplicate_notification_ids_in_one_message_are_stored_once(client, runtime, outbound_path):
    assert post(client, outbound_path, "notifications__duplicate-ids.xml").data == ACK
    assert [row.payload["notification_id"] for row in rows(runtime)] == ["04l5g00000AbCdEAAV"]


def test_session_id_is_never_stored(client, runtime, outbound_path):
    assert post(client, outbound_path, "notifications__lead-converted.xml").status_code == 200
    assert "AQ0AQFakeSessionForTestsOnly" not in repr(rows(runtime)[0].payload)


# --- refusals ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["notifications__billion-laughs.xml", "notifications__external-entity.xml",
                                  "notifications__doctype-only.xml"])
def test_dtd_or_entities_are_refused_with_400_and_no_row(client, runtime, outbound_path, name):
    response = post(client, outbound_path, name)
    assert response.status_code == 400 and response.json["error"] == "xml_forbidden"
    assert nothing_stored(runtime)


@pytest.mark.parametrize("body, reason", [
    (b"<soapenv:Envelope", "malformed_xml"),
    (b"<Envelope/>", "malformed_payload"),
    (fixture_bytes("salesforce/notifications__lead-two.xml").replace(b"<OrganizationId>00D5g000004ABCDEA2</OrganizationId>", b""),
     "malformed_payload"),
])
def test_unreadable_messages_are_refused_and_not_stored(client, runtime, outbound_path, body, reason):
    response = post(client, outbound_path, body)
    assert response.status_code == 400 and response.json["error"] == reason
    assert nothing_stored(runtime)


def test_more_than_100_notifications_are_refused(client, runtime, outbound_path):
    body = fixture_bytes("salesforce/notifications__lead-two.xml").decode()
    start, end = body.index("   <Notification>"), body.index("  </notifications>")
    one = body[start:body.index("   <Notification>", start + 1)]
    many = "".join(one.replace("04l5g00000AbCdEAAV", f"04l5g00000A{i:04d}AAV") for i in range(101))
    response = post(client, outbound_path, (body[:start] + many + body[end:]).encode())
    assert response.status_code == 400 and response.json["error"] == "too_many_notifications"
    assert nothing_stored(runtime)


def test_a_message_from_another_org_is_refused_with_no_row(client, runtime, workspace):
    path = "/" + connect(runtime, workspace, org_id="00D000000000001AAA")
    response = post(client, path, "notifications__lead-two.xml")
    assert response.status_code == 403 and response.json["error"] == "organization_mismatch"
    assert nothing_stored(runtime)


def test_a_connection_without_org_id_refuses_messages(client, runtime, workspace):
    path = "/" + connect(runtime, workspace, org_id=None)
    response = post(client, path, "notifications__lead-two.xml")
    assert response.status_code == 403 and response.json["error"] == "organization_not_configured"
    assert nothing_stored(runtime)


def test_a_15_character_org_id_matches_its_18_character_form(client, runtime, workspace):
    path = "/" + connect(runtime, workspace, org_id=ORG_ID[:15])
    assert post(client, path, "notifications__lead-two.xml").data == ACK


def test_unknown_source_key_is_404(client, runtime, outbound_path):
    response = post(client, "/webhooks/salesforce/not-a-key", "notifications__lead-two.xml")
    assert response.status_code == 404 and nothing_stored(runtime)


def test_15_character_ids_become_their_documented_18_character_form():
    assert salesforce.id18("001A0000006Vm9r") == "001A0000006Vm9rIAC"
    assert salesforce.id18("001A0000006Vm9rIAC") == "001A0000006Vm9rIAC"
    with pytest.raises(salesforce.PayloadError):
        salesforce.id18("001A0000006Vm9")


# --- what the stored notifications mean ------------------------------------------------------------

LEAD = {"system": "salesforce", "object_type": "Lead"}
HANDLED = [
    ("notifications__lead-two.xml", [
        change(**LEAD, external_id="00Q5g00000Lq1aBEAR", changed_at=utc("2026-11-25T18:04:11"),
               fields={"company": "Acme Widgets & Co", "email": "jane.doe@example.com", "first_name": "Jane",
                       "last_name": "Doe", "phone": "+1 415 555 0100", "title": "VP Marketing",
                       "owner": "0055g00000ABCdEAAX"},
               custom={"sf_lead_source": "Web", "sf_rating": "Hot", "sf_status": "Open - Not Contacted"}),
        change(**LEAD, external_id="00Q5g00000Lq1aCEAR", changed_at=utc("2026-11-25T18:04:12"),
               fields={"company": "Globex", "email": "r.roe@example.org", "last_name": "Roe",
                       "owner": "0055g00000ABCdEAAX"},
               custom={"sf_status": "Working - Contacted"}),
    ]),
    # Company "[not provided]" is the hub's own placeholder; Hub_Score__c is hub-owned; conversion folds the Lead in.
    ("notifications__lead-converted.xml", [
        change(**LEAD, external_id="00Q5g00000Lq1aDEAR", changed_at=utc("2026-11-25T18:10:00"),
               change_source="0055g00000IntgrAAA",
               fields={"city": "Springfield", "country": "US", "email": "sam.poe@example.net",
                       "industry": "Manufacturing", "last_name": "Poe", "mobile_phone": "+1 415 555 0199",
                       "company_size": "250", "state": "IL", "website": "https://poe.example.net"},
               custom={"sf_status": "Closed - Converted"}),
        change(system="salesforce", object_type="Contact", action="merge", external_id="0035g00000Xy9zQAAR",
               merged_external_ids=["00Q5g00000Lq1aDEAR"], changed_at=utc("2026-11-25T18:10:00"),
               change_source="0055g00000IntgrAAA"),
    ]),
    ("notifications__contact.xml", [
        change(system="salesforce", object_type="Contact", external_id="0035g00000Xy9zQAAR",
               changed_at=utc("2026-11-25T18:12:30"), change_source="0055g00000ABCdEAAX",
               fields={"email": "sam.poe@example.net", "first_name": "Sam", "last_name": "Poe", "city": "Springfield",
                       "country": "US", "state": "IL", "phone": None, "title": "Head of Operations",
                       "owner": "0055g00000ABCdEAAX"},
               custom={"sf_account_id": "0015g00000AcMeQAAR"}),
    ]),
]


@pytest.mark.parametrize("name, expected", HANDLED, ids=[case[0] for case in HANDLED])
def test_handlers_turn_stored_notifications_into_changes(client, runtime, outbound_path, name, expected):
    assert post(client, outbound_path, name).status_code == 200
    assert [c for row in rows(runtime) for c in handled(salesforce, row)] == expected
