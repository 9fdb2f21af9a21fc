"""The Redis token bucket shared by workers, and Salesforce's API reserve — against a real Redis."""
from __future__ import annotations

import multiprocessing
import threading
import time

import pytest
import redis

from hub.exceptions import ConfigError, RetriableError
from hub.sync.ratelimit import ApiReserve, Rate, TokenBucket
from tests.conftest import fixture_bytes


def max_in_any_window(times: list[float], window: float) -> int:
    """The most events inside any half-open window (t - window, t] ending at an event."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, moment in enumerate(ordered):
        while ordered[start] <= moment - window:
            start += 1
        best = max(best, end - start + 1)
    return best


@pytest.mark.parametrize("text, expected", [
    ("110/10s", Rate(110, 10.0)), ("5/1s", Rate(5, 1.0)), ("5/s", Rate(5, 1.0)), ("100/1m", Rate(100, 60.0)),
    ("20/500ms", Rate(20, 0.5)),
])
def test_rates_parse(text, expected):
    assert Rate.parse(text) == expected


@pytest.mark.parametrize("text", ["", "110", "0/10s", "ten/10s", "5/10d"])
def test_bad_rates_are_config_errors(text):
    with pytest.raises(ConfigError):
        Rate.parse(text)


def test_one_worker_never_exceeds_the_rate(redis_url):
    bucket = TokenBucket(redis.Redis.from_url(redis_url), "hub:rate:test:one", Rate(5, 0.5), margin=0)
    started = time.monotonic()
    grants = [bucket.acquire() for _ in range(15)]
    elapsed = time.monotonic() - started
    assert max_in_any_window([g.at_us / 1e6 for g in grants], 0.5) == 5
    assert elapsed >= 1.0                     # 15 calls at 5 per 0.5 s need two full windows of waiting


def test_threads_sharing_the_bucket_never_exceed_the_rate(redis_url):
    key = "hub:rate:test:threads"
    grants: list[float] = []
    local_times: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        bucket = TokenBucket(redis.Redis.from_url(redis_url), key, Rate(10, 0.5), margin=0)
        for _ in range(8):
            grant = bucket.acquire()
            with lock:
                grants.append(grant.at_us / 1e6)
                local_times.append(time.time())

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(grants) == 48
    assert max_in_any_window(grants, 0.5) == 10                       # Redis clock: exact
    assert max_in_any_window(local_times, 0.5 - 0.05) <= 10           # callers' clocks, 50 ms of jitter allowed


def _process_worker(redis_url: str, key: str, count: int, out) -> None:
    bucket = TokenBucket(redis.Redis.from_url(redis_url), key, Rate(6, 0.5), margin=0)
    out.put([bucket.acquire().at_us / 1e6 for _ in range(count)])


def test_processes_sharing_the_bucket_never_exceed_the_rate(redis_url):
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    processes = [context.Process(target=_process_worker, args=(redis_url, "hub:rate:test:procs", 8, out))
                 for _ in range(3)]
    for process in processes:
        process.start()
    grants = [t for _ in processes for t in out.get(timeout=60)]
    for process in processes:
        process.join(30)
    assert len(grants) == 24
    assert max_in_any_window(grants, 0.5) == 6


def test_acquire_waits_at_most_max_wait(redis_url):
    bucket = TokenBucket(redis.Redis.from_url(redis_url), "hub:rate:test:wait", Rate(1, 60.0), max_wait=0.2)
    bucket.acquire()
    started = time.monotonic()
    with pytest.raises(RetriableError) as busy:
        bucket.acquire()
    assert time.monotonic() - started < 1.0
    assert 59 < busy.value.retry_after <= 60.2


def test_redis_down_is_retriable(redis_server):
    bucket = TokenBucket(redis.Redis.from_url(redis_server.url, socket_timeout=1), "k", Rate(5, 1.0))
    bucket.acquire()
    redis_server.stop()
    with pytest.raises(RetriableError):
        bucket.acquire()


def test_api_reserve_reads_limit_info_and_refuses_inside_the_reserve(redis_url):
    reserve = ApiReserve(redis.Redis.from_url(redis_url), "00D5g000004ABCDEA2", 0.10)
    reserve.acquire()                                               # nothing known yet: allowed
    documented = fixture_bytes("salesforce-rest/headers__limit-info.txt").decode()
    header = next(line.split(": ", 1)[1] for line in documented.splitlines() if line.startswith("Sforce-Limit-Info"))
    assert reserve.observe(header) == (10018, 100000)
    reserve.acquire()
    assert reserve.observe("api-usage=25/5000; per-app-api-usage=17/250(appName=sample-connected-app)") == (25, 5000)
    assert reserve.observe("api-usage=4499/5000") == (4499, 5000)
    reserve.acquire()
    reserve.observe("api-usage=4500/5000")
    with pytest.raises(RetriableError) as refused:
        reserve.acquire()
    assert refused.value.retry_after >= 3600


def test_a_token_frees_a_window_after_its_call_finished_not_after_the_grant(redis_url):
    """The vendor counts a call when it arrives: a worker that stalls between the grant and the
    call must not let the next call through less than a window after this one arrived."""
    conn = redis.Redis.from_url(redis_url)
    bucket = TokenBucket(conn, "hub:rate:test:finish", Rate(1, 0.5), margin=0)
    grant = bucket.acquire()
    time.sleep(0.3)                           # the call is slow (or the worker stalled before sending it)
    bucket.finished(grant)
    waiting = bucket.try_acquire()
    assert not waiting.granted and waiting.wait_seconds > 0.45      # from the grant it would be < 0.2 s
    assert conn.pttl("hub:rate:test:finish") > 1300                 # the log outlives the re-stamped grant

    never_finished = TokenBucket(redis.Redis.from_url(redis_url), "hub:rate:test:unfinished", Rate(1, 0.5), margin=0)
    never_finished.acquire()
    time.sleep(0.3)
    assert never_finished.try_acquire().wait_seconds < 0.25         # no end recorded: a window after the grant


def test_a_connector_call_records_its_end_with_the_limiter_even_when_it_fails(redis_url):
    from hub.connectors.base import CallInfo, CrmConnector
    from hub.sync.tokens import StaticTokens

    ended: list[str] = []

    class RecordingBucket(TokenBucket):
        def finished(self, grant):
            ended.append(grant.member)
            super().finished(grant)

    bucket = RecordingBucket(redis.Redis.from_url(redis_url), "hub:rate:test:connector", Rate(5, 1.0), margin=0)
    connector = CrmConnector(StaticTokens("token"), limiter=bucket, sleep=lambda seconds: None)
    connector.max_attempts = 2

    def send(token: str, info: CallInfo):
        raise RetriableError("503 from the vendor")

    with pytest.raises(RetriableError):
        connector._call("op", [], send)
    assert len(ended) == 2 and all(ended)          # each attempt's token, failed calls included
