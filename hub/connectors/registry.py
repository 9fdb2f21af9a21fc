"""The CRM connectors by kind, and how to build one for a workspace.

    from hub.connectors import registry
    connector = registry.connector_for(runtime, workspace_id, "hubspot")   # or "salesforce"

The connector is wired with the workspace's stored (encrypted) credentials and their refresh flow
(hub.sync.tokens), the Redis rate limits shared by all workers (hub.sync.ratelimit) and a sync_log
recorder (hub.sync.synclog). Pass `session=` to write sync_log rows inside the caller's transaction
(needed on SQLite when the caller already holds a write transaction). Build one connector per job;
it caches its HTTP clients and tokens for the job's lifetime.
"""
from __future__ import annotations

from typing import Callable

from marshmallow import ValidationError
from sqlalchemy.orm import Session

from hub.connectors.base import CrmConnector
from hub.connectors.hubspot import HubSpotConnector
from hub.connectors.salesforce import DescribeCache, SalesforceConnector
from hub.exceptions import FatalError
from hub.sync.ratelimit import ApiReserve, hubspot_bucket
from hub.sync.synclog import SyncLogRecorder
from hub.sync.tokens import CredentialStore, HubSpotTokens, SalesforceTokens

CONNECTOR_CLASSES: dict[str, type[CrmConnector]] = {
    HubSpotConnector.kind: HubSpotConnector,
    SalesforceConnector.kind: SalesforceConnector,
}


def _checked(schema, credentials: dict, kind: str) -> None:
    """Refuse unusable stored credentials clearly (the messages name fields, never values)."""
    try:
        schema().load(credentials)
    except ValidationError as exc:
        raise FatalError(f"{kind} credentials invalid: {sorted(exc.messages)}", code="BAD_CREDENTIALS") from None


def _build_hubspot(runtime, workspace_id: str, recorder: SyncLogRecorder) -> HubSpotConnector:
    conn = runtime.redis()
    store = CredentialStore(runtime, workspace_id, "hubspot")
    tokens = HubSpotTokens(store, conn, api_base=runtime.settings.hubspot_api_base)
    tokens.recorder = recorder
    _checked(HubSpotConnector.credentials_schema, tokens.credentials, "hubspot")
    portal = store.account_id or workspace_id
    return HubSpotConnector(tokens, api_base=runtime.settings.hubspot_api_base,
                            limiter=hubspot_bucket(conn, portal, runtime.settings.hubspot_rate),
                            search_limiter=hubspot_bucket(conn, portal, runtime.settings.hubspot_search_rate,
                                                          search=True),
                            recorder=recorder)


def _build_salesforce(runtime, workspace_id: str, recorder: SyncLogRecorder) -> SalesforceConnector:
    conn = runtime.redis()
    store = CredentialStore(runtime, workspace_id, "salesforce")
    tokens = SalesforceTokens(store, conn, login_url=runtime.settings.salesforce_login_url)
    tokens.recorder = recorder
    _checked(SalesforceConnector.credentials_schema, tokens.credentials, "salesforce")
    reserve = ApiReserve(conn, store.account_id or workspace_id, runtime.settings.salesforce_api_reserve)
    return SalesforceConnector(tokens, reserve=reserve, recorder=recorder,
                               describe_cache=DescribeCache(conn, store.account_id or workspace_id))


BUILDERS: dict[str, Callable] = {"hubspot": _build_hubspot, "salesforce": _build_salesforce}


def connector_for(runtime, workspace_id: str, kind: str, session: Session | None = None) -> CrmConnector:
    """The `kind` connector of a workspace (FatalError NOT_CONNECTED when it has none)."""
    builder = BUILDERS.get(kind)
    if builder is None:
        raise FatalError(f"unknown connector kind {kind}", code="UNKNOWN_KIND")
    return builder(runtime, workspace_id, SyncLogRecorder(runtime.engine, workspace_id, session))
