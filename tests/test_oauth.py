"""The browser OAuth install flows (hub/oauth.py, hub/oauth_apps.py): admin-only install links, the
state/nonce CSRF check, the code exchange against the vendors' documented token answers, and what is
stored (the same credentials `hub connect` stores, so token refresh works alike).

Token answers: tests/fixtures/hubspot/oauth-token-response.json and
salesforce-rest/oauth-token__web-server-flow.json (the vendor samples);
hubspot/oauth-access-token-info.json is built from HubSpot's "Get OAuth token metadata"
(GET /oauth/v1/access-tokens/{token}: app_id, hub_id, scopes, token, token_type, user, user_id...).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest
import responses
from click.testing import CliRunner
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import func, select

from hub import admin
from hub import db as hub_db
from hub.app import create_app
from hub.cli import main as hub_cli
from hub.db import transaction
from hub.exceptions import ConfigError
from hub.models import Connection
from hub.oauth import STATE_SALT, TICKET_SALT, install_link
from hub.runtime import Runtime
from hub.settings import Settings
from hub.sync.tokens import CredentialStore, HubSpotTokens, SalesforceTokens
from tests.conftest import CLOSED_PORT_URL, fixture_json, make_runtime
from webhooks.common import hmac_sha256_b64

SECRET_KEY = "oauth-test-secret-key-0123456789"
HS_CLIENT_ID, HS_CLIENT_SECRET = "hs-client-id-1234", "hs-client-secret-5678"
SF_CLIENT_ID, SF_CLIENT_SECRET = "3MVG9-sf-consumer-key", "sf-consumer-secret-9876"
OAUTH_ENV = {"HUB_SECRET_KEY": SECRET_KEY,
             "HUB_HUBSPOT_CLIENT_ID": HS_CLIENT_ID, "HUB_HUBSPOT_CLIENT_SECRET": HS_CLIENT_SECRET,
             "HUB_SALESFORCE_CLIENT_ID": SF_CLIENT_ID, "HUB_SALESFORCE_CLIENT_SECRET": SF_CLIENT_SECRET}
HS_TOKEN_URL = f"{CLOSED_PORT_URL}/oauth/v1/token"
SF_TOKEN_URL = f"{CLOSED_PORT_URL}/services/oauth2/token"
CODE = "the-authorization-code"
JSON = {"Accept": "application/json"}

HS_ANSWER = fixture_json("hubspot/oauth-token-response.json")
HS_TOKEN = HS_ANSWER["authorization_code_grant"]            # older answers: no hub_id
HS_TOKEN_NEWER = {k: v for k, v in HS_ANSWER["newer_fields_per_oauth_openapi"].items() if not k.startswith("_")}
HS_TOKEN_INFO = fixture_json("hubspot/oauth-access-token-info.json")
HS_INFO_URL = f"{CLOSED_PORT_URL}/oauth/v1/access-tokens/{HS_TOKEN['access_token']}"
SF_SAMPLE = fixture_json("salesforce-rest/oauth-token__web-server-flow.json")


def sf_signed(body: dict, secret: str = SF_CLIENT_SECRET) -> dict:
    """The sample answer, signed as Salesforce signs it for our connected app's secret."""
    return {**body, "signature": hmac_sha256_b64(secret, body["id"] + body["issued_at"])}


SF_TOKEN = sf_signed(SF_SAMPLE)


@pytest.fixture
def runtime(monkeypatch, tmp_path, database_url, redis_url):
    """The shared runtime, with the hub's own HubSpot app and Salesforce connected app configured."""
    for name, value in OAUTH_ENV.items():
        monkeypatch.setenv(name, value)
    yield make_runtime(monkeypatch, tmp_path, database_url, redis_url)
    hub_db.dispose_all()


@pytest.fixture
def ws(workspace):
    return workspace["workspace_id"]


def app_with(runtime, **changes):
    app = create_app(runtime=Runtime(replace(runtime.settings, **changes)))
    app.testing = True
    return app


def start(client, runtime, crm: str, ws: str, **link_options) -> dict:
    """Open the install link in this browser; the vendor authorize URL's query."""
    link = urlsplit(install_link(runtime, crm, ws, **link_options)["install_url"])
    answer = client.get(f"{link.path}?{link.query}")
    assert answer.status_code == 302, answer.get_json()
    location = urlsplit(answer.headers["Location"])
    return {"url": f"{location.scheme}://{location.netloc}{location.path}", **dict(parse_qsl(location.query))}


def come_back(client, crm: str, state: str, **params):
    return client.get(f"/oauth/{crm}/callback", query_string={"code": CODE, "state": state, **params}, headers=JSON)


def connection_rows(runtime) -> int:
    with transaction(runtime.engine) as session:
        return session.scalar(select(func.count()).select_from(Connection))


def stored(runtime, ws: str, crm: str) -> tuple[Connection, dict]:
    return admin.load_credentials(runtime, ws, crm)


# --- install links ---------------------------------------------------------------------------------

def test_install_link_from_the_cli_redirects_to_hubspot_with_the_scopes_and_a_state(runtime, ws, client):
    result = CliRunner().invoke(hub_cli, ["install-link", "hubspot", "--workspace", ws, "--json"])
    assert result.exit_code == 0, result.output
    link = urlsplit(json.loads(result.output)["install_url"])
    assert link.path == "/oauth/hubspot/install" and "ticket" in parse_qs(link.query)

    answer = client.get(f"{link.path}?{link.query}")

    assert answer.status_code == 302
    location = urlsplit(answer.headers["Location"])
    query = parse_qs(location.query)
    assert f"{location.scheme}://{location.netloc}{location.path}" == "https://app.hubspot.com/oauth/authorize"
    assert query["client_id"] == [HS_CLIENT_ID]
    assert query["redirect_uri"] == ["http://localhost/oauth/hubspot/callback"]
    assert set(query["scope"][0].split(" ")) == {
        "oauth", "crm.objects.contacts.read", "crm.objects.contacts.write",
        "crm.schemas.contacts.read", "crm.schemas.contacts.write", "crm.objects.owners.read"}
    assert query["state"][0]


def test_cli_prints_name_value_lines_and_refuses_an_unknown_workspace(runtime, ws):
    result = CliRunner().invoke(hub_cli, ["install-link", "salesforce", "--workspace", ws])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("install_url: http://127.0.0.1:8000/oauth/salesforce/install?ticket=")

    result = CliRunner().invoke(hub_cli, ["install-link", "salesforce", "--workspace", "no-such-workspace"])
    assert result.exit_code != 0 and "no workspace no-such-workspace" in result.output


def test_salesforce_authorize_url_uses_the_login_host_and_the_public_url(runtime, ws):
    client = app_with(runtime, public_url="https://hub.example.com").test_client()

    query = start(client, runtime, "salesforce", ws)

    assert query["url"] == f"{CLOSED_PORT_URL}/services/oauth2/authorize"
    assert (query["response_type"], query["client_id"], query["scope"]) == ("code", SF_CLIENT_ID, "api refresh_token")
    assert query["redirect_uri"] == "https://hub.example.com/oauth/salesforce/callback"


def test_hubspot_authorize_base_comes_from_the_environment(runtime, ws):
    settings = Settings.from_env({"HUBSPOT_AUTHORIZE_URL": "http://127.0.0.1:8123/oauth/authorize/"})
    client = app_with(runtime, hubspot_authorize_url=settings.hubspot_authorize_url).test_client()

    assert start(client, runtime, "hubspot", ws)["url"] == "http://127.0.0.1:8123/oauth/authorize"


@pytest.mark.parametrize("make_ticket, status, reason", [
    (lambda ws: None, 400, "ticket_missing"),
    (lambda ws: URLSafeTimedSerializer("an-attacker-key", salt=TICKET_SALT).dumps(
        {"crm": "hubspot", "workspace": ws}), 401, "ticket_invalid"),
    (lambda ws: URLSafeTimedSerializer(SECRET_KEY, salt=STATE_SALT).dumps(            # a state is no ticket
        {"crm": "hubspot", "workspace": ws}), 401, "ticket_invalid"),
    (lambda ws: URLSafeTimedSerializer(SECRET_KEY, salt=TICKET_SALT).dumps(           # a Salesforce ticket
        {"crm": "salesforce", "workspace": ws}), 401, "ticket_invalid"),
    (lambda ws: signed_ago(3601, TICKET_SALT, {"crm": "hubspot", "workspace": ws}), 401, "ticket_expired"),
])
def test_install_refuses_a_missing_forged_misused_or_expired_ticket(client, ws, make_ticket, status, reason):
    ticket = make_ticket(ws)
    answer = client.get("/oauth/hubspot/install", query_string={"ticket": ticket} if ticket else {})

    assert (answer.status_code, answer.get_json()["error"]) == (status, reason)
    assert "Location" not in answer.headers


def signed_ago(seconds: int, salt: str, payload: dict) -> str:
    """Signed with the hub's key, as if `seconds` ago."""

    class PastSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - seconds

    return URLSafeTimedSerializer(SECRET_KEY, salt=salt, signer=PastSigner).dumps(payload)


# --- HubSpot -------------------------------------------------------------------------------------------

def test_hubspot_install_stores_the_portal_and_the_credentials_hub_connect_stores(runtime, ws, client):
    query = start(client, runtime, "hubspot", ws)
    with responses.RequestsMock() as vendor:
        token_call = vendor.post(HS_TOKEN_URL, json=HS_TOKEN)
        vendor.get(HS_INFO_URL, json=HS_TOKEN_INFO)        # older answers name no hub_id: ask for it
        answer = come_back(client, "hubspot", query["state"])

    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["connected"] is True and body["account_id"] == "62515"
    assert body["webhook_url"] == "http://127.0.0.1:8000/webhooks/hubspot"
    assert body["score_fields"].startswith("not checked")      # HubSpot's API is a closed port here
    sent = dict(parse_qsl(token_call.calls[0].request.body))
    assert sent == {"grant_type": "authorization_code", "code": CODE, "client_id": HS_CLIENT_ID,
                    "client_secret": HS_CLIENT_SECRET, "redirect_uri": query["redirect_uri"]}
    row, credentials = stored(runtime, ws, "hubspot")
    assert row.account_id == "62515" and row.settings == {"app_id": "54321"}
    expires_at = credentials.pop("expires_at")
    assert abs(expires_at - (time.time() + 1800)) < 60
    assert credentials == {"access_token": HS_TOKEN["access_token"], "refresh_token": HS_TOKEN["refresh_token"],
                           "client_id": HS_CLIENT_ID, "client_secret": HS_CLIENT_SECRET,
                           "app_secret": HS_CLIENT_SECRET}


def test_a_newer_hubspot_answer_with_hub_id_and_a_configured_app_id_needs_no_token_lookup(runtime, ws):
    apps = {**runtime.settings.oauth_apps, "hubspot": {**runtime.settings.oauth_apps["hubspot"], "app_id": "777"}}
    client = app_with(runtime, oauth_apps=apps).test_client()
    query = start(client, runtime, "hubspot", ws)
    with responses.RequestsMock() as vendor:         # an unexpected token lookup would fail the install
        vendor.post(HS_TOKEN_URL, json=HS_TOKEN_NEWER)
        answer = come_back(client, "hubspot", query["state"])

    assert answer.status_code == 200, answer.get_json()
    row, _ = stored(runtime, ws, "hubspot")
    assert (row.account_id, row.settings) == ("62515", {"app_id": "777"})


def test_a_hubspot_oauth_connection_refreshes_its_token_like_a_cli_connection(runtime, ws, client):
    query = start(client, runtime, "hubspot", ws)
    with responses.RequestsMock() as vendor:
        vendor.post(HS_TOKEN_URL, json=HS_TOKEN_NEWER)
        vendor.get(HS_INFO_URL, json=HS_TOKEN_INFO)
        assert come_back(client, "hubspot", query["state"]).status_code == 200
    tokens = HubSpotTokens(CredentialStore(runtime, ws, "hubspot"), runtime.redis(),
                           api_base=runtime.settings.hubspot_api_base)
    with responses.RequestsMock() as vendor:
        refresh = vendor.post(HS_TOKEN_URL, json=HS_ANSWER["refresh_token_grant"])
        new_token = tokens.refresh(HS_TOKEN["access_token"])

    assert new_token == HS_ANSWER["refresh_token_grant"]["access_token"]
    assert dict(parse_qsl(refresh.calls[0].request.body)) == {
        "grant_type": "refresh_token", "refresh_token": HS_TOKEN["refresh_token"],
        "client_id": HS_CLIENT_ID, "client_secret": HS_CLIENT_SECRET}


def test_a_portal_connected_to_another_workspace_is_refused(runtime, ws, client):
    other = admin.create_workspace(runtime, "Other")["workspace_id"]
    admin.connect(runtime, other, "hubspot", "62515", {"access_token": "other-token"})
    query = start(client, runtime, "hubspot", ws)
    with responses.RequestsMock() as vendor:
        vendor.post(HS_TOKEN_URL, json=HS_TOKEN_NEWER)
        vendor.get(HS_INFO_URL, json=HS_TOKEN_INFO)
        answer = come_back(client, "hubspot", query["state"])

    assert (answer.status_code, answer.get_json()["error"]) == (409, "account_connected_elsewhere")
    assert connection_rows(runtime) == 1
    assert stored(runtime, other, "hubspot")[1] == {"access_token": "other-token"}


def test_the_browser_gets_a_page_with_the_webhook_url_and_no_token(runtime, ws, client):
    query = start(client, runtime, "hubspot", ws)
    with responses.RequestsMock() as vendor:
        vendor.post(HS_TOKEN_URL, json=HS_TOKEN_NEWER)
        vendor.get(HS_INFO_URL, json=HS_TOKEN_INFO)
        answer = client.get("/oauth/hubspot/callback", query_string={"code": CODE, "state": query["state"]},
                            headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})

    page = answer.get_data(as_text=True)
    assert answer.status_code == 200 and answer.mimetype == "text/html"
    assert "hubspot connected" in page and "http://127.0.0.1:8000/webhooks/hubspot" in page
    assert HS_TOKEN["access_token"] not in page and HS_TOKEN["refresh_token"] not in page


# --- Salesforce ------------------------------------------------------------------------------------------

def test_salesforce_install_stores_the_org_the_integration_user_and_the_refresh_settings(runtime, ws, client):
    query = start(client, runtime, "salesforce", ws)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as vendor:
        token_call = vendor.post(SF_TOKEN_URL, json=SF_TOKEN)
        answer = come_back(client, "salesforce", query["state"])

    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["account_id"] == "00D5g000004ABCDEA2"
    row, credentials = stored(runtime, ws, "salesforce")
    assert body["webhook_url"] == f"http://127.0.0.1:8000/webhooks/salesforce/{row.source_key}"
    assert dict(parse_qsl(token_call.calls[0].request.body)) == {
        "grant_type": "authorization_code", "code": CODE, "client_id": SF_CLIENT_ID,
        "client_secret": SF_CLIENT_SECRET, "redirect_uri": query["redirect_uri"]}
    assert row.account_id == "00D5g000004ABCDEA2"
    assert row.settings == {"instance_url": "https://example-dev-ed.my.salesforce.com", "login_url": CLOSED_PORT_URL,
                            "integration_user_id": "0055g00000ABCdEAAX"}
    assert credentials == {"access_token": SF_TOKEN["access_token"], "refresh_token": SF_TOKEN["refresh_token"],
                           "client_id": SF_CLIENT_ID, "client_secret": SF_CLIENT_SECRET,
                           "issued_at": "1764093900000"}


def test_salesforce_score_fields_are_checked_right_after_the_install(runtime, ws, client):
    describe = fixture_json("salesforce-rest/describe-lead__excerpt.json")     # has no Hub_* fields
    api = "https://example-dev-ed.my.salesforce.com/services/data/v60.0/sobjects"
    query = start(client, runtime, "salesforce", ws)
    with responses.RequestsMock() as vendor:
        vendor.post(SF_TOKEN_URL, json=SF_TOKEN)
        vendor.get(f"{api}/Lead/describe", json=describe)
        vendor.get(f"{api}/Contact/describe", json={**describe, "name": "Contact"})
        answer = come_back(client, "salesforce", query["state"])

    assert answer.get_json()["score_fields"] == (
        "missing Lead.Hub_Score__c, Lead.Hub_Grade__c, Lead.Hub_Score_Reasons__c, "
        "Contact.Hub_Score__c, Contact.Hub_Grade__c, Contact.Hub_Score_Reasons__c")


def test_a_sandbox_install_link_sends_the_browser_and_the_refresh_to_the_sandbox_login_host(runtime, ws, client):
    sandbox = "http://127.0.0.1:9/sandbox-login"
    query = start(client, runtime, "salesforce", ws, login_url=sandbox)
    assert query["url"] == f"{sandbox}/services/oauth2/authorize"
    with responses.RequestsMock(assert_all_requests_are_fired=False) as vendor:
        vendor.post(f"{sandbox}/services/oauth2/token", json=SF_TOKEN)
        assert come_back(client, "salesforce", query["state"]).status_code == 200

    tokens = SalesforceTokens(CredentialStore(runtime, ws, "salesforce"), runtime.redis(),
                              login_url=runtime.settings.salesforce_login_url)
    refreshed = fixture_json("salesforce-rest/oauth-token__refresh.json")
    with responses.RequestsMock() as vendor:
        refresh = vendor.post(f"{sandbox}/services/oauth2/token", json=refreshed)
        assert tokens.refresh(SF_TOKEN["access_token"]) == refreshed["access_token"]
    assert dict(parse_qsl(refresh.calls[0].request.body)) == {
        "grant_type": "refresh_token", "refresh_token": SF_TOKEN["refresh_token"],
        "client_id": SF_CLIENT_ID, "client_secret": SF_CLIENT_SECRET}


@pytest.mark.parametrize("answer_body", [
    SF_SAMPLE,                                                   # signed with another secret
    sf_signed(SF_SAMPLE, "not-our-secret"),
    {**SF_TOKEN, "id": SF_TOKEN["id"].replace("0055g00000ABCdEAAX", "0055g00000ZZZzZZZZ")},   # id swapped after signing
    {k: v for k, v in SF_TOKEN.items() if k != "signature"},
])
def test_a_salesforce_answer_whose_signature_does_not_match_is_refused(runtime, ws, client, answer_body):
    query = start(client, runtime, "salesforce", ws)
    with responses.RequestsMock() as vendor:
        vendor.post(SF_TOKEN_URL, json=answer_body)
        answer = come_back(client, "salesforce", query["state"])

    assert (answer.status_code, answer.get_json()["error"]) == (502, "token_signature_invalid")
    assert connection_rows(runtime) == 0


def test_a_salesforce_answer_without_a_refresh_token_is_refused(runtime, ws, client):
    query = start(client, runtime, "salesforce", ws)
    with responses.RequestsMock() as vendor:
        vendor.post(SF_TOKEN_URL, json={k: v for k, v in SF_TOKEN.items() if k != "refresh_token"})
        answer = come_back(client, "salesforce", query["state"])

    assert (answer.status_code, answer.get_json()["error"]) == (502, "no_refresh_token")
    assert "refresh_token" in answer.get_json()["detail"] and connection_rows(runtime) == 0


# --- refusals in the callback ----------------------------------------------------------------------------

@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
def test_a_state_back_in_another_browser_session_is_refused_before_any_vendor_call(runtime, ws, client, app, crm):
    query = start(client, runtime, crm, ws)
    other_browser = app.test_client()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as vendor:
        token_call = vendor.post(HS_TOKEN_URL if crm == "hubspot" else SF_TOKEN_URL, json={})
        answer = come_back(other_browser, crm, query["state"])

    assert (answer.status_code, answer.get_json()["error"]) == (403, "state_mismatch")
    assert token_call.call_count == 0 and connection_rows(runtime) == 0


def test_a_state_is_used_once(runtime, ws, client):
    query = start(client, runtime, "salesforce", ws)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as vendor:
        vendor.post(SF_TOKEN_URL, json=SF_TOKEN)
        assert come_back(client, "salesforce", query["state"]).status_code == 200
        again = come_back(client, "salesforce", query["state"])

    assert (again.status_code, again.get_json()["error"]) == (403, "state_mismatch")


@pytest.mark.parametrize("tamper, status, reason", [
    (lambda state, ws: state[:-3] + ("AAA" if state[-3:] != "AAA" else "BBB"), 401, "state_invalid"),
    (lambda state, ws: URLSafeTimedSerializer(SECRET_KEY, salt=TICKET_SALT).dumps(     # a ticket is no state
        {"crm": "hubspot", "workspace": ws, "nonce": "x"}), 401, "state_invalid"),
    (lambda state, ws: signed_ago(601, STATE_SALT, URLSafeTimedSerializer(SECRET_KEY, salt=STATE_SALT).loads(state)),
     401, "state_expired"),
    (lambda state, ws: "", 400, "state_missing"),
])
def test_a_tampered_expired_or_missing_state_is_refused(runtime, ws, client, tamper, status, reason):
    query = start(client, runtime, "hubspot", ws)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as vendor:
        token_call = vendor.post(HS_TOKEN_URL, json=HS_TOKEN_NEWER)
        answer = come_back(client, "hubspot", tamper(query["state"], ws))

    assert (answer.status_code, answer.get_json()["error"]) == (status, reason)
    assert token_call.call_count == 0 and connection_rows(runtime) == 0


def test_the_vendors_error_is_a_400_with_its_code_and_nothing_is_stored(runtime, ws, client):
    query = start(client, runtime, "hubspot", ws)
    answer = client.get("/oauth/hubspot/callback", headers=JSON, query_string={
        "state": query["state"], "error": "access_denied", "error_description": "The user denied the request"})

    assert answer.status_code == 400
    assert answer.get_json() == {"error": "authorization_refused",
                                 "detail": "hubspot answered access_denied: The user denied the request"}
    assert connection_rows(runtime) == 0


@pytest.mark.parametrize("crm, url, status, body, expected_status, reason, detail_part", [
    ("hubspot", HS_TOKEN_URL, 400, HS_ANSWER["error_example"]["body"], 400, "code_refused", "BAD_REFRESH_TOKEN"),
    ("salesforce", SF_TOKEN_URL, 400, {"error": "invalid_grant", "error_description": "expired authorization code"},
     400, "code_refused", "invalid_grant"),
    ("hubspot", HS_TOKEN_URL, 500, {"status": "error", "message": "internal error"}, 502,
     "token_endpoint_unavailable", "500"),
    ("salesforce", SF_TOKEN_URL, 503, {}, 502, "token_endpoint_unavailable", "503"),
])
def test_a_token_endpoint_error_is_clear_and_stores_nothing(runtime, ws, client, crm, url, status, body,
                                                            expected_status, reason, detail_part):
    query = start(client, runtime, crm, ws)
    with responses.RequestsMock() as vendor:
        token_call = vendor.post(url, json=body, status=status)
        answer = come_back(client, crm, query["state"])

    assert (answer.status_code, answer.get_json()["error"]) == (expected_status, reason)
    assert detail_part in answer.get_json()["detail"]
    assert token_call.call_count == 1                       # one attempt: a code is single-use
    assert connection_rows(runtime) == 0


def test_an_unreachable_token_lookup_names_no_token(runtime, ws, client):
    query = start(client, runtime, "hubspot", ws)
    with responses.RequestsMock() as vendor:             # the token lookup URL is not answered
        vendor.post(HS_TOKEN_URL, json=HS_TOKEN)
        answer = come_back(client, "hubspot", query["state"])

    assert (answer.status_code, answer.get_json()["error"]) == (502, "token_info_unavailable")
    assert HS_TOKEN["access_token"] not in answer.get_data(as_text=True)
    assert connection_rows(runtime) == 0


def test_no_token_or_secret_reaches_the_logs(runtime, ws, client, caplog):
    caplog.set_level(logging.DEBUG)
    query = start(client, runtime, "hubspot", ws)
    with responses.RequestsMock() as vendor:
        vendor.post(HS_TOKEN_URL, json=HS_TOKEN)
        vendor.get(HS_INFO_URL, json=HS_TOKEN_INFO)
        assert come_back(client, "hubspot", query["state"]).status_code == 200

    assert "oauth install: hubspot account 62515 connected" in caplog.text
    for secret in (HS_TOKEN["access_token"], HS_TOKEN["refresh_token"], HS_CLIENT_SECRET, CODE):
        assert secret not in caplog.text


# --- configuration ------------------------------------------------------------------------------------

@pytest.mark.parametrize("changes, detail_part", [
    ({"oauth_apps": {}}, "HUB_HUBSPOT_CLIENT_ID"),
    ({"secret_key": "dev-only-secret-key"}, "HUB_SECRET_KEY"),
])
def test_without_the_app_or_a_secret_key_every_step_says_oauth_not_configured(runtime, ws, client, changes,
                                                                              detail_part):
    query = start(client, runtime, "hubspot", ws)
    link = urlsplit(install_link(runtime, "hubspot", ws)["install_url"])
    unconfigured = app_with(runtime, **changes).test_client()

    for answer in (unconfigured.get(f"{link.path}?{link.query}"), come_back(unconfigured, "hubspot", query["state"])):
        assert (answer.status_code, answer.get_json()["error"]) == (503, "oauth_not_configured")
        assert detail_part in answer.get_json()["detail"]
    assert connection_rows(runtime) == 0


def test_the_cli_says_oauth_not_configured(runtime, ws, monkeypatch):
    monkeypatch.delenv("HUB_SALESFORCE_CLIENT_ID")
    monkeypatch.delenv("HUB_SALESFORCE_CLIENT_SECRET")
    result = CliRunner().invoke(hub_cli, ["install-link", "salesforce", "--workspace", ws])

    assert result.exit_code != 0 and "oauth_not_configured" in result.output


def test_a_client_id_without_its_secret_is_a_start_up_error(runtime):
    with pytest.raises(ConfigError, match="HUB_HUBSPOT_CLIENT_ID and HUB_HUBSPOT_CLIENT_SECRET"):
        Settings.from_env({"HUB_HUBSPOT_CLIENT_SECRET": ""})


def test_an_unknown_crm_is_404(client):
    answer = client.get("/oauth/pipedrive/install", query_string={"ticket": "x"})
    assert (answer.status_code, answer.get_json()["error"]) == (404, "unknown_crm")


def test_the_nonce_cookie_is_lax_and_secure_behind_an_https_public_url(runtime, ws):
    client = app_with(runtime, public_url="https://hub.example.com").test_client()
    link = urlsplit(install_link(runtime, "hubspot", ws)["install_url"])

    cookie = client.get(f"{link.path}?{link.query}").headers["Set-Cookie"]

    assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=Lax" in cookie


def test_hub_connect_refuses_a_portal_connected_to_another_workspace(runtime, ws):
    from click.testing import CliRunner

    from hub.cli import main as hub_cli

    other = admin.create_workspace(runtime, "Other")["workspace_id"]
    admin.connect(runtime, other, "hubspot", "62515", {"access_token": "other-token"})
    result = CliRunner(env={"HUBSPOT_API_BASE": CLOSED_PORT_URL}).invoke(hub_cli, [
        "connect", "hubspot", "--workspace", ws, "--access-token", "pat-na1-new", "--portal-id", "62515"])

    assert result.exit_code == 1
    assert "hubspot account 62515 is connected to another workspace" in result.output
    assert connection_rows(runtime) == 1
    assert stored(runtime, other, "hubspot")[1] == {"access_token": "other-token"}
    # the same portal again in its own workspace is a reconnection, not a second portal
    admin.connect(runtime, other, "hubspot", "62515", {"access_token": "renewed"})
    assert stored(runtime, other, "hubspot")[1] == {"access_token": "renewed"}
