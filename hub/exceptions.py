"""Exceptions shared across the hub."""


class HubError(Exception):
    """Base class for hub errors."""


class ConfigError(HubError):
    """The settings are invalid; raised at start-up."""


class SignatureError(HubError):
    """A webhook failed verification. `reason` is machine-readable."""

    def __init__(self, reason: str = "bad_signature", message: str = ""):
        super().__init__(message or reason)
        self.reason = reason


class PayloadError(HubError):
    """A verified webhook body could not be parsed. `reason` is machine-readable."""

    def __init__(self, reason: str = "malformed_payload", message: str = ""):
        super().__init__(message or reason)
        self.reason = reason


class RoutingError(HubError):
    """A verified webhook names an account the hub does not know (or the wrong one)."""

    def __init__(self, reason: str, status: int = 403):
        super().__init__(reason)
        self.reason = reason
        self.status = status


class RetriableError(HubError):
    """A vendor call that may succeed later (429, 423, 5xx, timeouts)."""

    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class FatalError(HubError):
    """A vendor call that will not succeed by retrying (auth, validation)."""

    def __init__(self, message: str, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.code = code
        self.status = status


class TokenExpiredError(FatalError):
    """The access token was refused; the caller refreshes once and retries once."""


class InvalidValueError(HubError, ValueError):
    """A vendor value that cannot be made canonical (bad email, phone, country). `reason` is machine-readable."""

    def __init__(self, reason: str, message: str = ""):
        super().__init__(message or reason)
        self.reason = reason


class UnsupportedEventError(HubError):
    """An event the hub stores but does not act on; the event is marked 'ignored' with `reason`."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class OAuthError(HubError):
    """An OAuth install step refused (hub/oauth.py). `reason` is machine-readable; `status` is the HTTP answer."""

    def __init__(self, reason: str, status: int = 400, detail: str = ""):
        super().__init__(detail or reason)
        self.reason = reason
        self.status = status
        self.detail = detail
