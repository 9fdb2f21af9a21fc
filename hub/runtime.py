"""The process-wide handles built from Settings: database engine, vault, Redis URL.

The Flask app keeps one in `app.extensions["hub"]`; workers and CLI commands build their own.
"""
from __future__ import annotations

from functools import cached_property

from sqlalchemy.engine import Engine

from hub.crypto import Vault
from hub.db import get_engine
from hub.redis_conn import get_redis, redis_url_for
from hub.settings import Settings


class Runtime:
    def __init__(self, settings: Settings):
        self.settings = settings

    @classmethod
    def from_env(cls, overrides: dict | None = None) -> "Runtime":
        return cls(Settings.from_env(overrides))

    @cached_property
    def engine(self) -> Engine:
        return get_engine(self.settings.database_url)

    @cached_property
    def vault(self) -> Vault:
        return Vault(self.settings.encryption_keys)

    @cached_property
    def redis_url(self) -> str:
        return redis_url_for(self.settings)

    def redis(self):
        return get_redis(self.redis_url)


def current_runtime() -> Runtime:
    from flask import current_app

    return current_app.extensions["hub"]
