"""Access tokens for the CRM connectors: refresh ahead of expiry, once on 401, one worker at a time.

HubSpot access tokens live `expires_in` seconds (about 30 minutes): they are refreshed
TOKEN_REFRESH_MARGIN_SECONDS before `expires_at`, and once when HubSpot answers 401.
Salesforce returns no `expires_in`; its token is refreshed once on INVALID_SESSION_ID (401), and
the returned `instance_url` replaces the stored one (simple-salesforce has no refresh flow).

A Redis lock per connection makes concurrent workers refresh ONCE: the first one refreshes and
stores the new token (encrypted, in Connection.credentials); the others wait for the lock, re-read
the credentials, see a token different from the one that failed, and reuse it.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

import redis
import requests
from sqlalchemy import select

from hub import defaults
from hub.db import transaction
from hub.exceptions import FatalError, RetriableError
from hub.models import Connection

logger = logging.getLogger(__name__)


class CredentialStore:
    """Reads and writes one Connection's encrypted credentials."""

    def __init__(self, runtime, workspace_id: str, kind: str):
        self.runtime = runtime
        self.workspace_id = workspace_id
        self.kind = kind
        self.account_id: str | None = None     # portal id / org id, known after load()

    def _row(self, session) -> Connection:
        row = session.scalar(select(Connection).where(Connection.workspace_id == self.workspace_id,
                                                      Connection.kind == self.kind))
        if row is None:
            raise FatalError(f"workspace has no {self.kind} connection", code="NOT_CONNECTED")
        return row

    def load(self) -> tuple[dict, dict]:
        """(credentials, settings) of the connection."""
        with transaction(self.runtime.engine) as session:
            row = self._row(session)
            self.account_id = row.account_id
            return self.runtime.vault.decrypt_json(row.credentials), dict(row.settings or {})

    def update(self, changes: dict) -> dict:
        with transaction(self.runtime.engine) as session:
            row = self._row(session)
            credentials = {**self.runtime.vault.decrypt_json(row.credentials), **changes}
            row.credentials = self.runtime.vault.encrypt({k: v for k, v in credentials.items() if v is not None})
            return credentials


class _RefreshingTokens:
    """Shared refresh flow; subclasses say how to ask the vendor for a new token."""

    kind = ""

    def __init__(self, store: CredentialStore, conn: redis.Redis, *, session: requests.Session | None = None,
                 clock: Callable[[], float] = time.time, timeout: float = defaults.HTTP_TIMEOUT_SECONDS):
        self.store = store
        self.conn = conn
        self.http = session or requests.Session()
        self.clock = clock
        self.timeout = timeout
        self.credentials, self.settings = store.load()
        self.refresh_count = 0            # refreshes this object made itself (not reused ones)
        self.recorder = None              # a SyncLogRecorder: token calls are outbound calls too

    @property
    def lock_name(self) -> str:
        return f"hub:token-lock:{self.store.workspace_id}:{self.kind}"

    def access_token(self) -> str:
        return self.credentials["access_token"]

    def refresh(self, stale_token: str) -> str:
        """Get a token other than `stale_token`: reuse another worker's refresh, or refresh once."""
        lock = self.conn.lock(self.lock_name, timeout=defaults.TOKEN_LOCK_SECONDS,
                              blocking_timeout=defaults.TOKEN_LOCK_WAIT_SECONDS)
        try:
            acquired = lock.acquire()
        except redis.RedisError as exc:
            raise RetriableError(f"token lock unavailable: {type(exc).__name__}", retry_after=5) from exc
        if not acquired:
            raise RetriableError("another worker is still refreshing the token", retry_after=5)
        try:
            self.credentials, self.settings = self.store.load()
            if self.credentials.get("access_token") != stale_token and not self._expiring():
                return self.credentials["access_token"]
            self.credentials = self.store.update(self._request_new_token())
            self.refresh_count += 1
            logger.info("refreshed %s access token for workspace %s", self.kind, self.store.workspace_id)
            return self.credentials["access_token"]
        finally:
            try:
                lock.release()
            except redis.exceptions.LockError:
                logger.warning("token lock expired before release (%s)", self.kind)

    def _expiring(self) -> bool:
        return False

    def _post_token(self, url: str, form: dict) -> dict:
        missing = [name for name in ("refresh_token", "client_id") if not form.get(name)]
        if missing:
            raise FatalError(f"{self.kind} token expired and cannot be refreshed (no {', '.join(missing)})",
                             code="TOKEN_EXPIRED")
        started = time.perf_counter()
        try:
            response = self.http.post(url, data=form, timeout=self.timeout, headers={"Accept": "application/json"})
        except requests.RequestException as exc:
            unreachable = RetriableError(f"{self.kind} token endpoint unreachable: {type(exc).__name__}")
            self._record(started, None, unreachable)
            raise unreachable from exc
        try:
            body = token_answer(self.kind, response, "token refresh")
        except (RetriableError, FatalError) as exc:
            self._record(started, response, exc)
            raise
        self._record(started, response, None)
        return body

    def _record(self, started: float, response, error: Exception | None) -> None:
        if self.recorder is None:
            return
        code = getattr(error, "code", None)
        self.recorder.record(target=self.kind, operation="oauth.refresh", object_ids=[], request_id=None,
                             status="error" if error else "ok",
                             http_status=response.status_code if response is not None else None,
                             latency_ms=(time.perf_counter() - started) * 1000.0,
                             error=(f"{code}: {error}" if code else str(error)) if error else None)


class HubSpotTokens(_RefreshingTokens):
    """HubSpot OAuth tokens: POST {api_base}/oauth/v1/token grant_type=refresh_token."""

    kind = "hubspot"

    def __init__(self, store: CredentialStore, conn: redis.Redis, api_base: str, **kwargs):
        super().__init__(store, conn, **kwargs)
        self.api_base = api_base.rstrip("/")

    def access_token(self) -> str:
        if self._expiring():
            return self.refresh(self.credentials["access_token"])
        return self.credentials["access_token"]

    def _expiring(self) -> bool:
        expires_at = self.credentials.get("expires_at")
        return bool(expires_at) and float(expires_at) - self.clock() < defaults.TOKEN_REFRESH_MARGIN_SECONDS

    def _request_new_token(self) -> dict:
        body = self._post_token(f"{self.api_base}/oauth/v1/token", {
            "grant_type": "refresh_token", "refresh_token": self.credentials.get("refresh_token"),
            "client_id": self.credentials.get("client_id"), "client_secret": self.credentials.get("client_secret"),
        })
        expires_in = body.get("expires_in")
        return {"access_token": body["access_token"],
                "refresh_token": body.get("refresh_token") or self.credentials.get("refresh_token"),
                "expires_at": self.clock() + float(expires_in) if expires_in else None}


class SalesforceTokens(_RefreshingTokens):
    """Salesforce OAuth tokens: POST {login_url}/services/oauth2/token grant_type=refresh_token."""

    kind = "salesforce"

    def __init__(self, store: CredentialStore, conn: redis.Redis, login_url: str, **kwargs):
        super().__init__(store, conn, **kwargs)
        self.default_login_url = login_url.rstrip("/")

    def instance_url(self) -> str:
        url = self.credentials.get("instance_url") or self.settings.get("instance_url")
        if not url:
            raise FatalError("Salesforce connection has no instance_url", code="NOT_CONNECTED")
        return url.rstrip("/")

    def _request_new_token(self) -> dict:
        login_url = (self.settings.get("login_url") or self.default_login_url).rstrip("/")
        body = self._post_token(f"{login_url}/services/oauth2/token", {
            "grant_type": "refresh_token", "refresh_token": self.credentials.get("refresh_token"),
            "client_id": self.credentials.get("client_id"), "client_secret": self.credentials.get("client_secret"),
        })
        # no expires_in; the refresh_token normally stays the same (absent from the answer)
        return {"access_token": body["access_token"],
                "refresh_token": body.get("refresh_token") or self.credentials.get("refresh_token"),
                "instance_url": (body.get("instance_url") or self.instance_url()).rstrip("/"),
                "issued_at": body.get("issued_at")}


class StaticTokens:
    """A fixed token (tests, private-app tokens): a 401 cannot be cured by refreshing."""

    def __init__(self, token: str, instance_url: str | None = None):
        self.token = token
        self._instance_url = instance_url

    def access_token(self) -> str:
        return self.token

    def instance_url(self) -> str:
        return self._instance_url or ""

    def refresh(self, stale_token: str) -> str:
        raise FatalError("access token refused and no refresh flow configured", code="TOKEN_EXPIRED", status=401)


def token_answer(kind: str, response: requests.Response, action: str) -> dict:
    """A token endpoint's JSON body, or the error: RetriableError (429, 5xx), FatalError with the
    vendor's code (`error` for Salesforce and OAuth 2.0, `status` for HubSpot). Shared by refresh and
    the install flow's code exchange (hub/oauth_apps.py)."""
    if response.status_code == 429 or response.status_code >= 500:
        raise RetriableError(f"{kind} token endpoint answered {response.status_code}", status=response.status_code)
    body = _json_or_empty(response)
    if response.status_code != 200 or "access_token" not in body:
        code = body.get("error") or body.get("status") or f"HTTP_{response.status_code}"
        raise FatalError(f"{kind} {action} refused", code=str(code), status=response.status_code)
    return body


def _json_or_empty(response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
