"""Rate limits shared by every worker: a token bucket in Redis, and Salesforce's API reserve.

`TokenBucket` holds `limit` tokens per `window`; a spent token comes back one window (plus
RATE_LIMIT_MARGIN_SECONDS) after the call it let through *finished* (`finished(grant)` re-stamps
it then; a grant never finished comes back a window after the grant). The vendor counts a call
when it arrives, which is before its answer: however long a worker stalled between the grant and
the call reaching the vendor, the next call that token lets through arrives more than a window
after it. That is HubSpot's own rule (a rolling 10-second window), so N workers together never
send more than `limit` calls in any window of that length. The bucket is one Redis sorted set of
grant times, checked and updated by Lua scripts (atomic), timed by Redis's clock so that
processes on several hosts agree.

`ApiReserve` keeps the last `Sforce-Limit-Info: api-usage=N/M` an org reported and refuses calls
(RetriableError with a long retry_after) once only the reserve (HUB_SALESFORCE_API_RESERVE of M)
is left, so the hub never spends what the org keeps for its other integrations.
"""
from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import redis

from hub import defaults
from hub.exceptions import ConfigError, RetriableError

logger = logging.getLogger(__name__)

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_USAGE = re.compile(r"api-usage=(\d+)/(\d+)")

# KEYS[1] grant log (sorted set, score = grant time in µs); ARGV: limit, window µs, member.
# Returns {granted (0|1), now µs, wait µs until a token frees}.
_ACQUIRE_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1000)
  return {1, now, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, now, tonumber(oldest[2]) + window - now}
"""

# KEYS[1] grant log; ARGV: member, window µs. The call is over: its token frees from now (if still
# logged), and the log lives at least a window more.
_FINISHED_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if redis.call('ZADD', KEYS[1], 'XX', 'CH', now, ARGV[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) / 1000) + 1000)
end
return now
"""


@dataclass(frozen=True)
class Rate:
    limit: int
    window_seconds: float

    @classmethod
    def parse(cls, text: str) -> "Rate":
        """'110/10s' -> Rate(110, 10.0); units ms, s, m, h; '5/s' means 5 per second."""
        match = _RATE.match(text or "")
        if not match or int(match.group(1)) <= 0:
            raise ConfigError(f"bad rate {text!r}; expected e.g. 110/10s")
        amount = float(match.group(2) or 1)
        return cls(int(match.group(1)), amount * _UNIT_SECONDS[match.group(3)])


@dataclass(frozen=True)
class Grant:
    granted: bool
    at_us: int                 # Redis clock, microseconds
    wait_seconds: float
    member: str = ""           # the grant's entry in the log


class TokenBucket:
    """acquire() blocks (at most `max_wait` seconds) until a token is free."""

    def __init__(self, conn: redis.Redis, key: str, rate: Rate,
                 max_wait: float = defaults.RATE_LIMIT_MAX_WAIT_SECONDS,
                 sleep: Callable[[float], None] = time.sleep,
                 margin: float = defaults.RATE_LIMIT_MARGIN_SECONDS):
        self.margin = margin
        self.conn = conn
        self.key = key
        self.rate = rate
        self.max_wait = max_wait
        self.sleep = sleep
        self._script = conn.register_script(_ACQUIRE_LUA)
        self._finished_script = conn.register_script(_FINISHED_LUA)

    @property
    def window_us(self) -> int:
        """How long a spent token stays spent, margin included."""
        return int((self.rate.window_seconds + self.margin) * 1_000_000)

    def try_acquire(self) -> Grant:
        member = uuid.uuid4().hex
        try:
            granted, now_us, wait_us = self._script(keys=[self.key], args=[self.rate.limit, self.window_us, member])
        except redis.RedisError as exc:
            raise RetriableError(f"rate limiter unavailable: {type(exc).__name__}", retry_after=5) from exc
        return Grant(bool(granted), int(now_us), max(int(wait_us), 0) / 1_000_000, member if granted else "")

    def finished(self, grant: Grant) -> None:
        """The call `grant` let through has its answer (or gave up): its token frees a window from now."""
        if not grant.member:
            return
        try:
            self._finished_script(keys=[self.key], args=[grant.member, self.window_us])
        except redis.RedisError as exc:    # the call is made; its token then frees a window after the grant
            logger.warning("rate limiter %s: call end not recorded (%s)", self.key, type(exc).__name__)

    def acquire(self) -> Grant:
        deadline = time.monotonic() + self.max_wait
        while True:
            grant = self.try_acquire()
            if grant.granted:
                return grant
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RetriableError(f"rate limit {self.key} busy", retry_after=grant.wait_seconds or 1.0)
            # a little past the freeing moment so the retry finds the token
            self.sleep(min(grant.wait_seconds + 0.001, remaining))


def hubspot_bucket(conn: redis.Redis, portal_id: str, rate_text: str, search: bool = False) -> TokenBucket:
    """The per-portal bucket (HUB_HUBSPOT_RATE) or the search bucket (HUB_HUBSPOT_SEARCH_RATE)."""
    name = "hubspot-search" if search else "hubspot"
    return TokenBucket(conn, f"hub:rate:{name}:{portal_id}", Rate.parse(rate_text))


class ApiReserve:
    """Salesforce's daily API allowance as last reported by the org, kept in Redis."""

    def __init__(self, conn: redis.Redis, org_key: str, reserve_fraction: float):
        self.conn = conn
        self.key = f"hub:sf-usage:{org_key}"
        self.reserve_fraction = reserve_fraction

    def observe(self, header_value: str | None) -> tuple[int, int] | None:
        """Store `api-usage=N/M` from a Sforce-Limit-Info header."""
        match = _USAGE.search(header_value or "")
        if not match:
            return None
        used, limit = int(match.group(1)), int(match.group(2))
        try:
            self.conn.set(self.key, f"{used}/{limit}", ex=defaults.SALESFORCE_USAGE_TTL_SECONDS)
        except redis.RedisError as exc:
            logger.warning("could not store Salesforce API usage: %s", type(exc).__name__)
        return used, limit

    def usage(self) -> tuple[int, int] | None:
        try:
            value = self.conn.get(self.key)
        except redis.RedisError as exc:
            raise RetriableError(f"API usage store unavailable: {type(exc).__name__}", retry_after=5) from exc
        if not value:
            return None
        used, limit = (int(part) for part in value.decode().split("/"))
        return used, limit

    def finished(self, grant) -> None:
        """Nothing to record: the org reports its usage in each answer."""

    def acquire(self) -> None:
        """Refuse when the next call would eat into the reserve."""
        usage = self.usage()
        if usage is None:
            return
        used, limit = usage
        if used >= limit * (1.0 - self.reserve_fraction):
            raise RetriableError(f"Salesforce API allowance down to its reserve ({used}/{limit})",
                                 retry_after=defaults.SALESFORCE_RESERVE_RETRY_SECONDS)
