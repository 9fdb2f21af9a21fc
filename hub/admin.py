"""Admin actions behind the CLI (and tests): workspaces, sources, CRM connections."""
from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import select

from hub import defaults
from hub.crypto import sha256_hex
from hub.db import transaction
from hub.exceptions import HubError
from hub.models import Connection, Source, Workspace

SOURCE_KINDS = ("typeform", "webflow", "shopify", "woocommerce", "generic", "html")
SHOP_KINDS = ("shopify", "woocommerce")


class AdminError(HubError):
    pass


class AccountConnectedElsewhere(AdminError):
    """A CRM account whose webhooks are routed by account id is connected to another workspace."""


# CRMs whose webhooks name the account, not a URL of the connection: HubSpot posts every portal's
# events to /webhooks/hubspot with its portalId, so a portal can feed one workspace only.
ROUTED_BY_ACCOUNT = frozenset({"hubspot"})


@dataclass(frozen=True)
class Created:
    values: dict


def base_url(runtime) -> str:
    """HUB_PUBLIC_URL, else the local address `hub serve` listens on (what CLI output prints)."""
    return runtime.settings.public_url or f"http://127.0.0.1:{runtime.settings.port}"


def source_webhook_url(runtime, kind: str, source_key: str) -> str:
    folder = "shops" if kind in SHOP_KINDS else "forms"
    return f"{base_url(runtime)}/webhooks/{folder}/{source_key}"


def create_workspace(runtime, name: str) -> dict:
    api_key = "hub_" + secrets.token_urlsafe(32)
    with transaction(runtime.engine) as session:
        workspace = Workspace(name=name, api_key_hash=sha256_hex(api_key), settings={})
        session.add(workspace)
        session.flush()
        return {"workspace_id": workspace.id, "api_key": api_key}


def require_workspace(session, workspace_id: str) -> Workspace:
    workspace = session.get(Workspace, workspace_id)
    if workspace is None:
        raise AdminError(f"no workspace {workspace_id}")
    return workspace


def add_source(runtime, workspace_id: str, kind: str, secret: str | None, settings: dict | None = None) -> dict:
    if kind not in SOURCE_KINDS:
        raise AdminError(f"unknown source kind {kind}; one of {', '.join(SOURCE_KINDS)}")
    if kind != "html" and not secret:
        raise AdminError(f"a {kind} source needs --secret")
    source_key = secrets.token_urlsafe(16)
    with transaction(runtime.engine) as session:
        require_workspace(session, workspace_id)
        session.add(Source(workspace_id=workspace_id, kind=kind, source_key=source_key,
                           secret=runtime.vault.encrypt(secret) if secret else None, settings=settings or {}))
    return {"source_key": source_key, "webhook_url": source_webhook_url(runtime, kind, source_key)}


def connect(runtime, workspace_id: str, kind: str, account_id: str | None, credentials: dict,
            settings: dict | None = None) -> dict:
    """Store (or replace) a CRM connection; credentials are encrypted as one JSON object."""
    credentials = {k: v for k, v in credentials.items() if v not in (None, "")}
    with transaction(runtime.engine) as session:
        require_workspace(session, workspace_id)
        _check_account_free(session, workspace_id, kind, account_id)
        row = session.scalar(select(Connection).where(
            Connection.workspace_id == workspace_id, Connection.kind == kind))
        if row is None:
            row = Connection(workspace_id=workspace_id, kind=kind, source_key=secrets.token_urlsafe(16))
            session.add(row)
        row.account_id = str(account_id) if account_id else None
        row.credentials = runtime.vault.encrypt(credentials)
        row.settings = {**(row.settings or {}), **(settings or {})}
        session.flush()
        source_key = row.source_key
    path = "/webhooks/hubspot" if kind == "hubspot" else f"/webhooks/salesforce/{source_key}"
    return {"connection_id": row.id, "webhook_url": base_url(runtime) + path}


def _check_account_free(session, workspace_id: str, kind: str, account_id: str | None) -> None:
    if kind not in ROUTED_BY_ACCOUNT or not account_id:
        return
    other = session.scalar(select(Connection.workspace_id).where(
        Connection.kind == kind, Connection.account_id == str(account_id), Connection.workspace_id != workspace_id))
    if other is not None:
        raise AccountConnectedElsewhere(f"{kind} account {account_id} is connected to another workspace "
                                        f"(its webhooks can reach one workspace only)")


def ensure_hub_fields(runtime, workspace_id: str, kind: str) -> list[str]:
    """Right after connecting: create (HubSpot) or check (Salesforce) the score fields, in one quick attempt.

    Returns the fields still missing; raises HubError when the CRM cannot be asked (the caller warns).
    """
    from hub.connectors import registry

    connector = registry.connector_for(runtime, workspace_id, kind)
    connector.max_attempts = 1
    connector.timeout = defaults.CONNECT_CHECK_TIMEOUT_SECONDS
    return connector.ensure_hub_fields()


def load_credentials(runtime, workspace_id: str, kind: str) -> tuple[Connection, dict]:
    with transaction(runtime.engine) as session:
        row = session.scalar(select(Connection).where(
            Connection.workspace_id == workspace_id, Connection.kind == kind))
        if row is None:
            raise AdminError(f"workspace {workspace_id} has no {kind} connection")
        return row, runtime.vault.decrypt_json(row.credentials)
