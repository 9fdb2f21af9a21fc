"""Secrets at rest: Fernet with key rotation (the first key of HUB_ENCRYPTION_KEYS encrypts)."""
from __future__ import annotations

import hashlib
import json

from cryptography.fernet import Fernet, MultiFernet


class Vault:
    def __init__(self, keys: tuple[str, ...]):
        self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])

    def encrypt(self, value: dict | str) -> str:
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        return self._fernet.encrypt(text.encode()).decode()

    def decrypt(self, token: str) -> str:
        return self._fernet.decrypt(token.encode()).decode()

    def decrypt_json(self, token: str) -> dict:
        return json.loads(self.decrypt(token))

    def rotate(self, token: str) -> str:
        return self._fernet.rotate(token.encode()).decode()


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()
