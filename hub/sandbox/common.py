"""Pieces both CRM fakes share: a settable clock, request capture, fault injection, a rate limiter."""
from __future__ import annotations

import json
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any


class FakeClock:
    """Epoch seconds; real time by default, or frozen/advanced by the test."""

    def __init__(self, start: float | None = None):
        self._frozen = start
        self._offset = 0.0

    def now(self) -> float:
        return (self._frozen if self._frozen is not None else time.time()) + self._offset

    def now_ms(self) -> int:
        return int(self.now() * 1000)

    def advance(self, seconds: float) -> None:
        self._offset += seconds

    def freeze(self, at: float | None = None) -> None:
        self._frozen = self.now() if at is None else at
        self._offset = 0.0


@dataclass
class CapturedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    status: int = 0
    at: float = 0.0
    response_headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @classmethod
    def of(cls, request, body: bytes, at: float) -> "CapturedRequest":
        """A werkzeug request as the fakes keep it."""
        return cls(request.method, request.path, {k: request.args.getlist(k) for k in request.args},
                   dict(request.headers), body, at=at)


@dataclass
class FaultPlan:
    """Answer a seeded fraction of calls with one of `statuses` (and Retry-After)."""

    fraction: float = 0.0
    statuses: tuple[int, ...] = (429, 503)
    retry_after: int | None = 1
    seed: int = 1
    scheduled: deque = field(default_factory=deque)      # exact faults for the next calls
    injected: int = 0

    def __post_init__(self):
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    def fail_next(self, status: int, count: int = 1, retry_after: int | None = None, **extra) -> None:
        for _ in range(count):
            self.scheduled.append({"status": status, "retry_after": retry_after, **extra})

    def draw(self) -> dict | None:
        with self._lock:
            if self.scheduled:
                self.injected += 1
                return self.scheduled.popleft()
            if self.fraction and self._rng.random() < self.fraction:
                self.injected += 1
                return {"status": self._rng.choice(self.statuses), "retry_after": self.retry_after}
        return None


class SlidingWindowLimiter:
    """At most `limit` calls in any `window` seconds; counts refusals."""

    def __init__(self, limit: int, window: float, clock=time.monotonic):
        self.limit = limit
        self.window = window
        self.clock = clock
        self.calls: deque[float] = deque()
        self.refused = 0
        self.max_in_window = 0
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = self.clock()
            while self.calls and self.calls[0] <= now - self.window:
                self.calls.popleft()
            if len(self.calls) >= self.limit:
                self.refused += 1
                return False
            self.calls.append(now)
            self.max_in_window = max(self.max_in_window, len(self.calls))
            return True

    def remaining(self) -> int:
        return max(self.limit - len(self.calls), 0)
