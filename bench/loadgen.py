"""A small HTTP/1.1 load generator for bench/ingest: pre-built requests, keep-alive connections,
one non-blocking event loop per client process.

Two modes:
- closed loop (`rate=None`): every connection sends its next request as soon as the answer arrives,
  which finds the maximum rate;
- open loop (`rate=R`): requests are due at fixed intervals whatever the server does, and latency is
  counted from the moment a request was due (not when a free connection sent it), so a slow server
  cannot hide its queueing (no coordinated omission).

The client only copies bytes and finds Content-Length, so it costs a few tens of microseconds per
request; bench/ingest reports its CPU time beside the figures.
"""
from __future__ import annotations

import multiprocessing
import resource
import selectors
import socket
import time
from dataclasses import dataclass, field

RECV_BYTES = 65536


@dataclass
class PhaseResult:
    sent: int = 0
    ok: int = 0
    errors: dict = field(default_factory=dict)     # status line (or exception name) -> count
    latencies: list = field(default_factory=list)  # seconds
    elapsed: float = 0.0
    client_cpu: float = 0.0
    exhausted: bool = False
    cpu: dict = field(default_factory=dict)         # filled by the caller: server/database CPU seconds

    def merge(self, other: "PhaseResult") -> None:
        self.sent += other.sent
        self.ok += other.ok
        for key, count in other.errors.items():
            self.errors[key] = self.errors.get(key, 0) + count
        self.latencies.extend(other.latencies)
        self.elapsed = max(self.elapsed, other.elapsed)
        self.client_cpu += other.client_cpu
        self.exhausted = self.exhausted or other.exhausted


def build_request(host: str, port: int, path: str, headers: dict, body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: keep-alive",
             f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Connection:
    def __init__(self, host: str, port: int):
        self.address = (host, port)
        self.sock = self._open()
        self.buffer = b""
        self.outgoing = b""
        self.request = b""
        self.due = 0.0          # when the request in flight was due (open loop) or sent (closed loop)
        self.busy = False
        self.reopened = False

    def _open(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        return sock

    def send(self, request: bytes, due: float) -> None:
        self.busy, self.due, self.buffer, self.request, self.reopened = True, due, b"", request, False
        try:
            sent = self.sock.send(request)
        except (BrokenPipeError, ConnectionResetError):
            sent = 0
        self.outgoing = request[sent:]

    def reopen(self, selector) -> None:
        selector.unregister(self.sock)
        self.sock.close()
        self.sock = self._open()
        selector.register(self.sock, selectors.EVENT_READ, self)
        self.buffer = b""

    def resend(self) -> None:
        """The server closed a keep-alive connection before answering: do what HTTP clients do and
        send the request again on a new one (once per request)."""
        self.reopened = True
        sent = self.sock.send(self.request)
        self.outgoing = self.request[sent:]

    def flush(self) -> None:
        if self.outgoing:
            sent = self.sock.send(self.outgoing)
            self.outgoing = self.outgoing[sent:]

    def read(self) -> tuple[bool, str]:
        """Returns (complete, status line). Raises ConnectionError when the server closed."""
        chunk = self.sock.recv(RECV_BYTES)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buffer += chunk
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return False, ""
        head = self.buffer[:head_end].decode("latin-1")
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if len(self.buffer) < head_end + 4 + length:
            return False, ""
        return True, head.split("\r\n", 1)[0]


def run_phase(host: str, port: int, requests: list[bytes], connections: int, seconds: float,
              rate: float | None = None, cycle: bool = False, start_at: float | None = None) -> PhaseResult:
    """Send `requests` (in order) for `seconds`; `cycle` reuses them when they run out."""
    result = PhaseResult()
    cpu_start = resource.getrusage(resource.RUSAGE_SELF)
    conns = [_Connection(host, port) for _ in range(connections)]
    selector = selectors.DefaultSelector()
    for conn in conns:
        selector.register(conn.sock, selectors.EVENT_READ, conn)
    if start_at:
        time.sleep(max(0.0, start_at - time.time()))
    started = time.perf_counter()
    deadline = started + seconds
    interval = 1.0 / rate if rate else 0.0
    next_index = 0
    free = list(conns)

    def next_request() -> bytes | None:
        nonlocal next_index
        if next_index >= len(requests):
            if not cycle:
                result.exhausted = True
                return None
            next_index = 0
        request = requests[next_index]
        next_index += 1
        return request

    while True:
        now = time.perf_counter()
        if now >= deadline and not any(c.busy for c in conns):
            break
        if now < deadline and not result.exhausted:
            while free:
                if rate is not None:
                    due = started + result.sent * interval
                    if due > now:
                        break
                else:
                    due = now
                request = next_request()
                if request is None:
                    break
                conn = free.pop()
                conn.send(request, due)
                result.sent += 1
        elif result.exhausted and not any(c.busy for c in conns):
            break
        timeout = 0.05
        if rate is not None and free:
            timeout = max(0.0, min(timeout, started + result.sent * interval - time.perf_counter()))
        for key, _events in selector.select(timeout):
            conn = key.data
            try:
                conn.flush()
                complete, status = conn.read()
            except (BlockingIOError, InterruptedError):
                continue
            except (ConnectionError, BrokenPipeError) as exc:
                if not conn.busy:             # an idle keep-alive connection timed out
                    conn.reopen(selector)
                    continue
                if not conn.buffer and not conn.reopened:
                    conn.reopen(selector)
                    conn.resend()
                    continue
                result.errors[type(exc).__name__] = result.errors.get(type(exc).__name__, 0) + 1
                selector.unregister(conn.sock)
                conns.remove(conn)
                continue
            except OSError as exc:
                result.errors[type(exc).__name__] = result.errors.get(type(exc).__name__, 0) + 1
                selector.unregister(conn.sock)
                conns.remove(conn)
                continue
            if not complete:
                continue
            finished = time.perf_counter()
            conn.busy = False
            free.append(conn)
            if status.split(" ", 2)[1:2] == ["200"]:
                result.ok += 1
                result.latencies.append(finished - conn.due)
            else:
                result.errors[status] = result.errors.get(status, 0) + 1
        for conn in conns:
            if conn.outgoing:
                try:
                    conn.flush()
                except BlockingIOError:
                    pass
        if not conns:
            break
    result.elapsed = time.perf_counter() - started
    for conn in conns:
        conn.sock.close()
    cpu_end = resource.getrusage(resource.RUSAGE_SELF)
    result.client_cpu = (cpu_end.ru_utime - cpu_start.ru_utime) + (cpu_end.ru_stime - cpu_start.ru_stime)
    return result


def _worker(args, queue) -> None:
    queue.put(run_phase(*args[:5], **args[5]))


def run_parallel(host: str, port: int, requests: list[bytes], connections: int, seconds: float,
                 processes: int = 1, rate: float | None = None, cycle: bool = False) -> PhaseResult:
    """Split connections, requests and rate over `processes` client processes started together."""
    if processes == 1:
        return run_phase(host, port, requests, connections, seconds, rate=rate, cycle=cycle)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    start_at = time.time() + 0.5
    workers = []
    for index in range(processes):
        share = requests[index::processes]
        kwargs = {"rate": rate / processes if rate else None, "cycle": cycle, "start_at": start_at}
        args = (host, port, share, max(1, connections // processes), seconds, kwargs)
        worker = context.Process(target=_worker, args=(args, queue))
        worker.start()
        workers.append(worker)
    total = PhaseResult()
    for _ in workers:
        total.merge(queue.get(timeout=seconds + 120))
    for worker in workers:
        worker.join(timeout=10)
    return total
