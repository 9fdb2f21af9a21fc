"""The hub's own OAuth apps, one small class per CRM: where to send the browser, how to exchange the
authorization code, and what the connection stores.

What is stored uses the same credential and settings keys as `hub connect` (hub/cli.py), so token
refresh (hub/sync/tokens.py), webhook verification and echo suppression treat both kinds of
connection alike.

- HubSpot: authorize at HUBSPOT_AUTHORIZE_URL; POST {HUBSPOT_API_BASE}/oauth/v1/token. The portal id is
  `hub_id` in newer token answers; otherwise (and when HUB_HUBSPOT_APP_ID is unset, for the app id that
  marks the hub's own writes) GET {HUBSPOT_API_BASE}/oauth/v1/access-tokens/<token> names both.
- Salesforce (web server flow): {login_url}/services/oauth2/authorize and /token. The answer's
  `signature` = base64(HMAC-SHA256(client secret, id + issued_at)) must match; the org id and the
  installing user (stored as the integration user) come from `id`. There is no expires_in: the token
  is refreshed on INVALID_SESSION_ID.

Each call is one attempt with a timeout: an authorization code is single-use, so a retried exchange
could only fail. Error messages name fields and vendor error codes, never token values (the token
info URL holds the access token, so a requests exception's text is never passed on).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit

import requests

from hub import defaults
from hub.exceptions import FatalError, OAuthError, PayloadError, RetriableError
from hub.sync.tokens import token_answer
from webhooks.common import hmac_sha256_b64, signatures_match
from webhooks.salesforce import id18


@dataclass(frozen=True)
class Installation:
    """What `hub.admin.connect` stores for a finished install."""

    account_id: str
    credentials: dict
    settings: dict


class OAuthApp:
    """Shared plumbing; subclasses build the authorize URL and turn a code into an Installation."""

    kind = ""
    refresh_token_hint = ""              # what to change when the vendor grants no refresh token

    def __init__(self, settings, client: dict, *, login_url: str | None = None,
                 http: requests.Session | None = None, timeout: float = defaults.HTTP_TIMEOUT_SECONDS):
        """`login_url`: Salesforce's login host for this install (the others ignore it)."""
        self.settings = settings
        self.login_url = login_url
        self.client_id = client["client_id"]
        self.client_secret = client["client_secret"]
        self.http = http or requests.Session()
        self.timeout = timeout

    def authorize_url(self, redirect_uri: str, state: str) -> str:
        raise NotImplementedError

    def install(self, code: str, redirect_uri: str) -> Installation:
        raise NotImplementedError

    def _exchange(self, url: str, code: str, redirect_uri: str) -> dict:
        """POST grant_type=authorization_code once; the token answer, or OAuthError."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "client_id": self.client_id, "client_secret": self.client_secret}
        try:
            response = self.http.post(url, data=form, timeout=self.timeout, headers={"Accept": "application/json"})
        except requests.RequestException as exc:
            raise OAuthError("token_endpoint_unavailable", 502,
                             f"{self.kind} token endpoint unreachable ({type(exc).__name__})") from None
        try:
            body = token_answer(self.kind, response, "authorization code")
        except RetriableError as exc:
            raise OAuthError("token_endpoint_unavailable", 502, str(exc)) from None
        except FatalError as exc:
            raise OAuthError("code_refused", 400, f"{self.kind} refused the authorization code "
                                                  f"({_short(exc.code)}); start the install again") from None
        if not body.get("refresh_token"):
            # without one the connection would stop working when the access token expires
            raise OAuthError("no_refresh_token", 502, f"{self.kind} granted no refresh token{self.refresh_token_hint}")
        return body


class HubSpotApp(OAuthApp):
    kind = "hubspot"

    def __init__(self, settings, client: dict, **kwargs):
        super().__init__(settings, client, **kwargs)
        self.app_id = client.get("app_id")
        self.api_base = settings.hubspot_api_base.rstrip("/")

    def authorize_url(self, redirect_uri: str, state: str) -> str:
        query = {"client_id": self.client_id, "redirect_uri": redirect_uri,
                 "scope": " ".join(defaults.HUBSPOT_OAUTH_SCOPES), "state": state}
        return f"{self.settings.hubspot_authorize_url}?{urlencode(query, quote_via=quote)}"

    def install(self, code: str, redirect_uri: str) -> Installation:
        body = self._exchange(f"{self.api_base}/oauth/v1/token", code, redirect_uri)
        info = {} if body.get("hub_id") and self.app_id else self._token_info(body["access_token"])
        portal_id = body.get("hub_id") or info.get("hub_id")
        if not portal_id:
            raise OAuthError("token_answer_invalid", 502, "HubSpot named no portal (hub_id)")
        app_id = self.app_id or info.get("app_id")
        expires_in = body.get("expires_in")
        credentials = {"access_token": body["access_token"], "refresh_token": body["refresh_token"],
                       "expires_at": time.time() + float(expires_in) if expires_in else None,
                       "client_id": self.client_id, "client_secret": self.client_secret,
                       # the app's client secret also signs its webhooks (v1/v2/v3)
                       "app_secret": self.client_secret}
        return Installation(str(portal_id), credentials, {"app_id": str(app_id)} if app_id else {})

    def _token_info(self, access_token: str) -> dict:
        """GET /oauth/v1/access-tokens/<token>: hub_id, app_id, scopes (one attempt)."""
        url = f"{self.api_base}/oauth/v1/access-tokens/{quote(access_token, safe='')}"
        try:
            response = self.http.get(url, timeout=self.timeout, headers={"Accept": "application/json"})
        except requests.RequestException as exc:
            raise OAuthError("token_info_unavailable", 502,
                             f"HubSpot token information unreachable ({type(exc).__name__})") from None
        try:
            info = response.json() if response.status_code == 200 else None
        except ValueError:
            info = None
        if not isinstance(info, dict):
            raise OAuthError("token_info_unavailable", 502,
                             f"HubSpot token information answered {response.status_code}")
        return info


class SalesforceApp(OAuthApp):
    kind = "salesforce"
    refresh_token_hint = ("; add the scope 'Perform requests at any time (refresh_token, offline_access)' "
                          "to the connected app")

    def __init__(self, settings, client: dict, **kwargs):
        super().__init__(settings, client, **kwargs)
        self.login_url = (self.login_url or settings.salesforce_login_url).rstrip("/")

    def authorize_url(self, redirect_uri: str, state: str) -> str:
        query = {"response_type": "code", "client_id": self.client_id, "redirect_uri": redirect_uri,
                 "scope": " ".join(defaults.SALESFORCE_OAUTH_SCOPES), "state": state}
        return f"{self.login_url}/services/oauth2/authorize?{urlencode(query, quote_via=quote)}"

    def install(self, code: str, redirect_uri: str) -> Installation:
        body = self._exchange(f"{self.login_url}/services/oauth2/token", code, redirect_uri)
        self._check_signature(body)
        org_id, user_id = identity_ids(body.get("id"))
        instance_url = str(body.get("instance_url") or "").rstrip("/")
        if urlsplit(instance_url).scheme not in ("https", "http") or not urlsplit(instance_url).netloc:
            raise OAuthError("token_answer_invalid", 502, "Salesforce named no instance_url")
        credentials = {"access_token": body["access_token"], "refresh_token": body["refresh_token"],
                       "client_id": self.client_id, "client_secret": self.client_secret,
                       "issued_at": body.get("issued_at")}
        settings = {"instance_url": instance_url, "login_url": self.login_url, "integration_user_id": user_id}
        return Installation(org_id, credentials, settings)

    def _check_signature(self, body: dict) -> None:
        """The answer's id and issued_at are Salesforce's own: HMAC keyed with our client secret."""
        identity, issued_at = body.get("id"), body.get("issued_at")
        if not identity or not issued_at:
            raise OAuthError("token_signature_invalid", 502, "Salesforce's answer has no id or issued_at to verify")
        expected = hmac_sha256_b64(self.client_secret, f"{identity}{issued_at}")
        if not signatures_match(expected, body.get("signature")):
            raise OAuthError("token_signature_invalid", 502, "Salesforce's token answer signature does not match")


def identity_ids(identity_url: str | None) -> tuple[str, str]:
    """(org id, user id) from Salesforce's identity URL `https://login.salesforce.com/id/<org>/<user>`."""
    parts = urlsplit(str(identity_url or "")).path.strip("/").split("/")
    if len(parts) != 3 or parts[0] != "id":
        raise OAuthError("token_answer_invalid", 502, "Salesforce's id is not an identity URL")
    try:
        id18(parts[1]), id18(parts[2])
    except PayloadError:
        raise OAuthError("token_answer_invalid", 502, "Salesforce's id names no org and user") from None
    return parts[1], parts[2]


def _short(text) -> str:
    return str(text)[:defaults.OAUTH_VENDOR_ERROR_MAX_CHARS]


APPS: dict[str, type[OAuthApp]] = {HubSpotApp.kind: HubSpotApp, SalesforceApp.kind: SalesforceApp}
