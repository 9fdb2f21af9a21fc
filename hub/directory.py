"""Look-ups the receivers need on every request (sources, CRM connections, secrets), cached briefly.

Secrets are decrypted here and kept in memory for at most SECRET_CACHE_SECONDS, so a verifier
does not run Fernet on every delivery.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from cryptography.fernet import InvalidToken
from sqlalchemy import select

from hub import defaults
from hub.db import transaction
from hub.models import Connection, Source

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """Where a verified delivery goes: the workspace and what verifies it."""

    workspace_id: str
    kind: str
    secret: str | None
    account_id: str | None
    settings: dict


class Directory:
    def __init__(self, runtime):
        self.runtime = runtime
        self._cache: dict[tuple, tuple[float, object]] = {}
        self._lock = threading.Lock()

    def _cached(self, key: tuple, load):
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit and now - hit[0] < defaults.SECRET_CACHE_SECONDS:
                return hit[1]
        value = load()
        with self._lock:
            self._cache[key] = (now, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def source(self, source_key: str) -> Target | None:
        """A form/shop source by its URL key."""

        def load():
            with transaction(self.runtime.engine) as session:
                row = session.scalar(select(Source).where(Source.source_key == source_key))
                if row is None:
                    return None
                secret = self.runtime.vault.decrypt(row.secret) if row.secret else None
                return Target(row.workspace_id, row.kind, secret, None, dict(row.settings or {}))

        return self._cached(("source", source_key), load)

    def salesforce(self, source_key: str) -> Target | None:
        """The Salesforce connection whose Outbound Message URL carries this key."""

        def load():
            with transaction(self.runtime.engine) as session:
                row = session.scalar(select(Connection).where(
                    Connection.source_key == source_key, Connection.kind == "salesforce"))
                if row is None:
                    return None
                return Target(row.workspace_id, "salesforce", None, row.account_id, dict(row.settings or {}))

        return self._cached(("salesforce", source_key), load)

    def hubspot_portals(self) -> dict[str, Target]:
        """portalId -> target, with the app secret that signs that portal's webhooks."""

        def load():
            with transaction(self.runtime.engine) as session:
                rows = session.scalars(select(Connection).where(Connection.kind == "hubspot")).all()
                portals = {}
                for row in rows:
                    try:
                        creds = self.runtime.vault.decrypt_json(row.credentials)
                    except InvalidToken:
                        # A key no longer in HUB_ENCRYPTION_KEYS must not stop every other portal.
                        logger.error("hubspot connection %s: credentials do not decrypt with "
                                     "HUB_ENCRYPTION_KEYS; its webhooks are refused", row.id)
                        continue
                    secret = creds.get("app_secret") or creds.get("client_secret")
                    portals[str(row.account_id)] = Target(
                        row.workspace_id, "hubspot", secret, row.account_id, dict(row.settings or {}))
                return portals

        return self._cached(("hubspot",), load)
