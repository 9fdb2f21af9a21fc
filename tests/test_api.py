"""The REST API (/api/v1): API-key auth, tenant isolation, problem+json errors, contact reads, erasures."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from hub import admin
from hub.db import transaction
from hub.models import Contact, Erasure, Event, Identity, PendingPush, SyncLog
from hub.sync import identity as identity_mod
from tests.conftest import run_pipeline
from tests.processing_helpers import contact_of, deliver_and_run, events, hubspot_items

JANE = 1246965            # the vendor samples' objectId; her profile fixture says jane.doe@example.com
JANE_EMAIL = "jane.doe@example.com"


@pytest.fixture
def auth(workspace):
    return {"Authorization": f"Bearer {workspace['api_key']}"}


@pytest.fixture
def jane(client, runtime, hubspot_connection, workspace) -> str:
    deliver_and_run(client, runtime, hubspot_items("contact.propertyChange__profile", objectId=JANE))
    return contact_of(runtime, workspace["workspace_id"], "hubspot", JANE).id


def assert_problem(response, status: int, reason: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert (body["status"], body["reason"]) == (status, reason)
    return body


# --- OpenAPI and authentication ------------------------------------------------------------------

def test_the_openapi_document_is_public_and_lists_every_route(app, client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"].startswith("3.1")
    routes = {(rule.rule.removeprefix("/api/v1").replace("<contact_id>", "{contact_id}"), method.lower())
              for rule in app.url_map.iter_rules() if rule.endpoint.startswith("api.")
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert routes == documented


@pytest.mark.parametrize("headers, reason", [
    ({}, "missing_api_key"),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, "bad_authorization"),
    ({"Authorization": "Bearer "}, "bad_authorization"),
    ({"Authorization": "Bearer hub_not-a-key"}, "bad_api_key"),
])
def test_requests_without_a_valid_key_are_refused(client, workspace, headers, reason):
    response = client.get("/api/v1/contacts", headers=headers)
    assert_problem(response, 401, reason)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_an_unknown_api_path_or_method_is_a_problem_too(client, auth):
    assert_problem(client.get("/api/v1/nothing-here", headers=auth), 404, "not_found")
    assert_problem(client.delete("/api/v1/erasures", headers=auth), 405, "method_not_allowed")
    assert client.get("/not-the-api").mimetype == "text/html"          # other paths keep Flask's answer


# --- contacts ------------------------------------------------------------------------------------

def test_a_contact_is_found_by_email_with_its_score_and_crm_identities(client, auth, jane):
    listed = client.get("/api/v1/contacts", query_string={"email": " Jane.Doe@Example.com "}, headers=auth)
    assert listed.status_code == 200, listed.get_json()
    assert [c["id"] for c in listed.get_json()["contacts"]] == [jane]
    found = listed.get_json()["contacts"][0]
    assert found["email"] == JANE_EMAIL and (found["first_name"], found["country"]) == ("Jane Mary", "DE")
    assert {"score", "grade", "score_reasons", "mql"} <= set(found)

    detail = client.get(f"/api/v1/contacts/{jane}", headers=auth).get_json()
    assert detail["identities"] == [{"system": "hubspot", "external_id": str(JANE), "object_type": "contact"}]
    assert detail["email"] == JANE_EMAIL


def test_a_contacts_events_are_listed_newest_first_without_payloads(client, runtime, auth, jane):
    applied = [e.id for e in events(runtime) if e.contact_id == jane]
    assert len(applied) >= 2
    first = client.get(f"/api/v1/contacts/{jane}/events", query_string={"limit": 1}, headers=auth).get_json()
    assert [e["id"] for e in first["events"]] == [max(applied)]
    assert "payload" not in first["events"][0] and first["events"][0]["source"] == "hubspot"
    rest = client.get(f"/api/v1/contacts/{jane}/events", query_string={"before": first["next_before"], "limit": 200},
                      headers=auth).get_json()
    assert [e["id"] for e in first["events"] + rest["events"]] == sorted(applied, reverse=True)
    assert rest["next_before"] is None


def test_contacts_are_paged_by_cursor(client, runtime, auth, workspace):
    with transaction(runtime.engine) as session:
        for n in range(5):
            session.add(Contact(workspace_id=workspace["workspace_id"], email=f"p{n}@example.com"))
    seen, after = [], None
    for _ in range(5):
        query = {"limit": 2} | ({"after": after} if after else {})
        page = client.get("/api/v1/contacts", query_string=query, headers=auth).get_json()
        seen += [c["email"] for c in page["contacts"]]
        after = page["next_after"]
        if after is None:
            break
    assert sorted(seen) == [f"p{n}@example.com" for n in range(5)] and len(seen) == 5


def test_another_workspace_cannot_see_the_contact(client, runtime, jane):
    other = admin.create_workspace(runtime, "Other")
    headers = {"Authorization": f"Bearer {other['api_key']}"}
    assert_problem(client.get(f"/api/v1/contacts/{jane}", headers=headers), 404, "contact_not_found")
    assert_problem(client.get(f"/api/v1/contacts/{jane}/events", headers=headers), 404, "contact_not_found")
    assert client.get("/api/v1/contacts", query_string={"email": JANE_EMAIL},
                      headers=headers).get_json()["contacts"] == []
    assert_problem(client.post("/api/v1/erasures", json={"contact_id": jane}, headers=headers), 404,
                   "contact_not_found")
    with transaction(runtime.engine) as session:
        assert session.get(Contact, jane).email == JANE_EMAIL


@pytest.mark.parametrize("query, field", [({"limit": 0}, "limit"), ({"limit": "many"}, "limit"),
                                          ({"limit": 201}, "limit")])
def test_bad_query_values_name_the_field(client, auth, query, field):
    body = assert_problem(client.get("/api/v1/contacts", query_string=query, headers=auth), 400, "invalid_request")
    assert field in body["errors"]


def test_a_malformed_email_query_is_refused(client, auth):
    assert_problem(client.get("/api/v1/contacts", query_string={"email": "not an address"}, headers=auth), 400,
                   "invalid_email")


# --- erasures ------------------------------------------------------------------------------------

def test_an_erasure_request_erases_the_person_and_keeps_only_hashes(client, runtime, auth, workspace, jane):
    wid = workspace["workspace_id"]
    with transaction(runtime.engine) as session:
        if session.scalar(select(PendingPush).where(PendingPush.contact_id == jane)) is None:
            session.add(PendingPush(workspace_id=wid, contact_id=jane, fields=["first_name"], origins=["hubspot"]))

    response = client.post("/api/v1/erasures", json={"email": "JANE.DOE@example.com"}, headers=auth)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"erased_contact_id": jane, "subjects_remembered": 2}

    with transaction(runtime.engine) as session:
        erased = session.get(Contact, jane)
        assert (erased.email, erased.first_name, erased.last_name, erased.phone) == (None, None, None, None)
        assert session.scalars(select(Identity)).all() == []
        assert session.scalars(select(PendingPush)).all() == []          # nothing left to push to the CRMs
        payloads = [e.payload for e in session.scalars(select(Event).where(Event.contact_id == jane))]
        hashes = set(session.scalars(select(Erasure.subject_hash)))
        logged = session.scalars(select(SyncLog).where(SyncLog.operation == "erasure.requested")).all()
    assert payloads and all(p == {"erased": True} for p in payloads)
    assert hashes == {identity_mod.subject_hash(wid, f"email:{JANE_EMAIL}"),
                      identity_mod.subject_hash(wid, f"hubspot:{JANE}")}
    assert [(row.object_ids, row.status) for row in logged] == [([jane], "decision")]
    assert "jane" not in str(logged[0].__dict__).lower()

    # a late event from before the request does not bring her back
    deliver_and_run(client, runtime, hubspot_items("contact.propertyChange__profile", objectId=JANE,
                                                   eventId=777, occurredAt=1764093000000))
    assert contact_of(runtime, wid, "hubspot", JANE) is None
    assert client.get("/api/v1/contacts", query_string={"email": JANE_EMAIL}, headers=auth).get_json()["contacts"] == []


def test_an_erasure_of_an_unknown_email_is_remembered(client, runtime, auth, workspace):
    response = client.post("/api/v1/erasures", json={"email": "someone@example.com"}, headers=auth)
    assert response.get_json() == {"erased_contact_id": None, "subjects_remembered": 1}
    with transaction(runtime.engine) as session:
        assert list(session.scalars(select(Erasure.subject_hash))) == [
            identity_mod.subject_hash(workspace["workspace_id"], "email:someone@example.com")]


@pytest.mark.parametrize("body, status, reason", [
    ({}, 400, "invalid_request"),
    ({"email": "a@example.com", "contact_id": "abc"}, 400, "invalid_request"),
    ({"email": 5}, 400, "invalid_request"),
    ({"email": "nope"}, 400, "invalid_email"),
    ({"contact_id": "0" * 32}, 404, "contact_not_found"),
])
def test_a_bad_erasure_request_is_refused_and_writes_nothing(client, runtime, auth, body, status, reason):
    assert_problem(client.post("/api/v1/erasures", json=body, headers=auth), status, reason)
    with transaction(runtime.engine) as session:
        assert session.scalars(select(Erasure)).all() == [] and session.scalars(select(SyncLog)).all() == []


def test_an_erasure_request_must_be_json(client, auth):
    assert_problem(client.post("/api/v1/erasures", data="email=a@example.com", headers=auth,
                               content_type="application/x-www-form-urlencoded"), 415, "unsupported_media_type")
    assert_problem(client.post("/api/v1/erasures", data="[1", headers=auth, content_type="application/json"),
                   400, "malformed_json")


# --- the same erasure from the command line ----------------------------------------------------------

def test_hub_erase_erases_by_contact_id(runtime, workspace, jane):
    import json

    from click.testing import CliRunner

    from hub.cli import main as hub_cli

    result = CliRunner().invoke(hub_cli, ["erase", "--workspace", workspace["workspace_id"], "--contact", jane,
                                          "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"erased_contact_id": jane, "subjects_remembered": 2}
    with transaction(runtime.engine) as session:
        assert session.get(Contact, jane).email is None


@pytest.mark.parametrize("args, message", [
    (["--email", "not an address"], "invalid email"),
    (["--contact", "0" * 32], "no contact"),
    ([], "give --email or --contact"),
])
def test_hub_erase_refuses_bad_requests_and_writes_nothing(runtime, workspace, args, message):
    from click.testing import CliRunner

    from hub.cli import main as hub_cli

    result = CliRunner().invoke(hub_cli, ["erase", "--workspace", workspace["workspace_id"], *args])
    assert result.exit_code != 0 and message in result.output.lower(), result.output
    with transaction(runtime.engine) as session:
        assert session.scalars(select(Erasure)).all() == [] and session.scalars(select(SyncLog)).all() == []
