"""The small interface every CRM connector implements, and the record shapes it speaks.

CRM clients are declarative where they can be (object name, id property, batch size as class
attributes) with behaviour in a few named hooks. Vendor errors are classified at this boundary:
`hub.exceptions.RetriableError` (429, 423, 5xx, timeouts; carries retry_after) or
`hub.exceptions.FatalError` (auth, validation; carries the vendor's code).

Build a connector for a workspace with the registry (it reads the encrypted Connection row and
wires tokens, the shared Redis rate limiter and the sync_log recorder)::

    from hub.connectors import registry
    hubspot = registry.connector_for(runtime, workspace_id, "hubspot")
    salesforce = registry.connector_for(runtime, workspace_id, "salesforce")
    results = hubspot.batch_upsert([CrmRecord("contact", None, {"email": "a@x.io", "firstname": "A"})])

Every outbound call made through `CrmConnector._call` is rate limited, retried (bounded,
honouring Retry-After), refreshed once on token expiry, and written to sync_log.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterator, Protocol, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from hub import defaults
from hub.exceptions import FatalError, RetriableError, TokenExpiredError

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class CrmRecord:
    """A CRM record in the CRM's own field names (HubSpot properties / Salesforce fields)."""

    object_type: str                      # "contact" (HubSpot) | "Lead" | "Contact" (Salesforce)
    id: str | None
    properties: dict[str, Any]
    updated_at: datetime | None = None
    field_times: dict[str, datetime] = field(default_factory=dict)
    modified_by: str | None = None        # Salesforce LastModifiedById / HubSpot source id
    field_sources: dict[str, str] = field(default_factory=dict)  # HubSpot: property -> "SOURCETYPE:sourceId"


@dataclass
class WriteResult:
    """One record's outcome in a batch write: one bad record fails alone."""

    key: str                              # the caller's key (email or record id)
    id: str | None
    ok: bool
    error_code: str | None = None
    error_message: str | None = None
    created: bool = False
    object_type: str | None = None        # what was written (Salesforce: Lead, or Contact once converted)


@dataclass
class ChangePage:
    """A page of records changed since a cursor.

    `iter_all` (backfill): `cursor` resumes the walk, None when done.
    `read_changes` (polling): `cursor` is always the value to store and pass next time (polls go
    on forever); `has_more` says another page is ready now.
    """

    records: list[CrmRecord]
    cursor: str | None                    # resume here; None when done (backfill)
    has_more: bool = False


@dataclass(frozen=True)
class CrmUser:
    """A CRM user who can own records: HubSpot owner id / Salesforce User Id, and their email."""

    id: str
    email: str


@dataclass
class TaskSpec:
    """A follow-up task on a person's CRM record (the rules' MQL handoff)."""

    record_id: str                        # HubSpot contact id | Salesforce Lead/Contact id (WhoId)
    subject: str
    body: str = ""
    due_at: datetime | None = None
    owner_id: str | None = None           # HubSpot owner id | Salesforce User id
    priority: str = "HIGH"                # HubSpot HIGH|MEDIUM|LOW; Salesforce gets High|Normal|Low


@dataclass
class TaskState:
    """A follow-up task as the CRM holds it now (read back by the SLA pass)."""

    id: str
    status: str | None                    # HubSpot hs_task_status | Salesforce Task.Status
    done: bool                            # HubSpot COMPLETED | Salesforce IsClosed
    body: str | None = None               # HubSpot hs_task_body | Salesforce Task.Description


class TokenProvider(Protocol):
    """Where a connector gets its access token (hub.sync.tokens)."""

    def access_token(self) -> str: ...

    def refresh(self, stale_token: str) -> str: ...


class Limiter(Protocol):
    """hub.sync.ratelimit: `acquire()` before a call (returns a grant or None), `finished(grant)` after it."""

    def acquire(self) -> Any: ...

    def finished(self, grant: Any) -> None: ...


class CallRecorder(Protocol):
    def record(self, *, target: str, operation: str, object_ids: list[str], request_id: str | None,
               status: str, http_status: int | None, latency_ms: float, error: str | None) -> None: ...


@dataclass
class CallInfo:
    """What one HTTP call left behind, filled in by the connector for sync_log."""

    request_id: str | None = None
    http_status: int | None = None
    status: str = "ok"                    # ok | partial | error
    object_ids: list[str] | None = None   # ids the answer named (e.g. records created), for sync_log


def retry_delay(exc: BaseException | None, attempt: int) -> float:
    """Seconds to wait before attempt `attempt + 1`: Retry-After when given, else 1, 2, 4... (capped)."""
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is None:
        retry_after = min(2 ** (attempt - 1), defaults.RETRY_MAX_WAIT_SECONDS)
    return min(float(retry_after), defaults.RETRY_MAX_WAIT_SECONDS)


def _wait_retry_after(state: RetryCallState) -> float:
    return retry_delay(state.outcome.exception() if state.outcome else None, state.attempt_number)


def retry_now(exc: BaseException) -> bool:
    """Retry in-process only what may clear soon; a long Retry-After goes back to the job queue."""
    if not isinstance(exc, RetriableError):
        return False
    return exc.retry_after is None or exc.retry_after <= defaults.RETRY_MAX_WAIT_SECONDS


class CrmConnector:
    """Read changes, batch upsert, search by email, describe fields, create tasks, list owners."""

    kind: str = ""
    batch_size: int = 100

    def __init__(self, tokens: TokenProvider, *, limiter: Limiter | None = None,
                 recorder: CallRecorder | None = None, sleep: Callable[[float], None] = time.sleep,
                 timeout: float = defaults.HTTP_TIMEOUT_SECONDS):
        self.tokens = tokens
        self.limiter = limiter
        self.recorder = recorder
        self.sleep = sleep
        self.timeout = timeout
        self.max_attempts = defaults.RETRY_MAX_ATTEMPTS    # per call; a quick check (hub connect) lowers it

    # --- the interface --------------------------------------------------------------------------

    def read_changes(self, cursor: str | None) -> ChangePage:
        raise NotImplementedError

    def iter_all(self, cursor: str | None = None) -> Iterator[ChangePage]:
        raise NotImplementedError

    def batch_upsert(self, records: list[CrmRecord]) -> list[WriteResult]:
        raise NotImplementedError

    def batch_update(self, records: list[CrmRecord]) -> list[WriteResult]:
        """Update records named by id (results keyed by id); by default the upsert, where an id already decides."""
        return self.batch_upsert(records)

    def batch_delete(self, object_type: str, ids: list[str]) -> list[WriteResult]:
        """Delete records by id in batches (results keyed by id); one that cannot be deleted fails alone."""
        raise NotImplementedError

    def find_by_email(self, emails: list[str]) -> dict[str, CrmRecord]:
        raise NotImplementedError

    def read_by_ids(self, object_type: str, ids: list[str]) -> dict[str, CrmRecord]:
        raise NotImplementedError

    def describe_fields(self, object_type: str) -> dict[str, dict]:
        raise NotImplementedError

    def ensure_hub_fields(self) -> list[str]:
        """Make sure the hub's score/grade/reasons fields exist; return the ones still missing."""
        raise NotImplementedError

    def create_task(self, task: TaskSpec) -> str:
        raise NotImplementedError

    def read_tasks(self, ids: list[str]) -> dict[str, TaskState]:
        """Task id -> its current state, batched; ids that no longer exist are absent."""
        raise NotImplementedError

    def defer_tasks(self, bodies: dict[str, str]) -> list[WriteResult]:
        """Set each task (id -> its new body text) to the CRM's Deferred status, batched."""
        raise NotImplementedError

    def list_owners(self) -> list[CrmUser]:
        """The users who can own records (active ones, with an email)."""
        raise NotImplementedError

    # --- one outbound call ------------------------------------------------------------------------

    def _call(self, operation: str, object_ids: list[str], send: Callable[[str, CallInfo], T],
              limiter: Limiter | None = None, retry: bool = True) -> T:
        """Run `send(access_token, info)` with rate limit, bounded retries and one token refresh.

        `send` performs exactly one HTTP call, fills `info` and raises hub.exceptions errors.
        `retry=False` for calls that are not safe to repeat blindly (the caller re-checks first).
        """
        attempts = self.max_attempts if retry else 1
        retrying = Retrying(stop=stop_after_attempt(attempts), wait=_wait_retry_after,
                            retry=retry_if_exception(retry_now), sleep=self.sleep,
                            reraise=True)
        refreshed = [False]

        def attempt() -> T:
            return self._attempt_with_refresh(operation, object_ids, send, limiter, refreshed)

        return retrying(attempt)

    def _attempt_with_refresh(self, operation, object_ids, send, limiter, refreshed) -> T:
        token = self.tokens.access_token()
        try:
            return self._logged(operation, object_ids, send, limiter, token)
        except TokenExpiredError:
            if refreshed[0]:
                raise
            refreshed[0] = True
            token = self.tokens.refresh(token)
            return self._logged(operation, object_ids, send, limiter, token)

    def _logged(self, operation, object_ids, send, limiter, token) -> T:
        active_limiter = limiter or self.limiter
        grant = active_limiter.acquire() if active_limiter is not None else None
        info = CallInfo()
        started = time.perf_counter()
        try:
            result = send(token, info)
        except (RetriableError, FatalError) as exc:
            self._record(operation, object_ids, info, started, "error", exc)
            raise
        finally:
            if grant is not None:
                active_limiter.finished(grant)
        self._record(operation, object_ids, info, started, info.status, None)
        return result

    def _record(self, operation, object_ids, info: CallInfo, started: float, status: str,
                exc: BaseException | None) -> None:
        if self.recorder is None:
            return
        http_status = info.http_status if info.http_status is not None else getattr(exc, "status", None)
        ids = list(object_ids) + [i for i in info.object_ids or [] if i not in object_ids]
        self.recorder.record(target=self.kind, operation=operation, object_ids=[str(i) for i in ids],
                             request_id=info.request_id, status=status, http_status=http_status,
                             latency_ms=(time.perf_counter() - started) * 1000.0,
                             error=_error_text(exc) if exc else None)


def _error_text(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    return f"{code}: {exc}" if code else f"{type(exc).__name__}: {exc}"


def chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
