"""`hub serve`'s process tree: embedded Redis, the relay, RQ workers and gunicorn, started and stopped together.

Every child runs in its own session, so a Ctrl-C in the terminal reaches only the supervisor, which
stops the web server first (no new deliveries), then the relay and the workers, then Redis. Every
child also asks the kernel for SIGTERM when the supervisor dies (Linux PR_SET_PDEATHSIG), so even a
supervisor killed with SIGKILL leaves no orphans behind.
"""
from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from hub.redis_conn import EmbeddedRedisServer

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
POLL_SECONDS = 0.2
STOP_SECONDS = 30.0          # gunicorn's graceful timeout is shorter; RQ finishes its current job
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def die_with_parent():
    """A `preexec_fn`: the child gets SIGTERM when the process that started it dies (Linux only)."""
    parent = os.getpid()

    def preexec() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:      # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def fresh_metrics_dir(instance_dir: str) -> str:
    """An empty PROMETHEUS_MULTIPROC_DIR: files left by an earlier run would be counted again."""
    path = os.path.join(instance_dir, "metrics")
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


@dataclass
class Child:
    name: str
    command: list[str]
    process: subprocess.Popen | None = None

    def start(self, env: dict) -> None:
        self.process = subprocess.Popen(self.command, env=env, stdin=subprocess.DEVNULL,
                                        preexec_fn=die_with_parent(), start_new_session=True)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class ProcessTree:
    """The children of `hub serve`, in start order; stopped in reverse order."""

    env: dict
    children: list[Child] = field(default_factory=list)
    redis: EmbeddedRedisServer | None = None
    _stop_requested: bool = False

    def start_embedded_redis(self, instance_dir: str) -> str:
        self.redis = EmbeddedRedisServer(instance_dir)
        self.redis.start(preexec_fn=die_with_parent())
        return self.redis.url

    def start(self, name: str, command: list[str]) -> None:
        child = Child(name, command)
        child.start(self.env)
        self.children.append(child)

    def request_stop(self, signum, _frame) -> None:
        logger.info("hub serve: %s received, stopping", signal.Signals(signum).name)
        self._stop_requested = True

    def run(self) -> int:
        """Wait until a stop signal or a child exits; then stop everything. Returns the exit code."""
        previous = {sig: signal.signal(sig, self.request_stop) for sig in STOP_SIGNALS}
        exit_code = 0
        try:
            while not self._stop_requested:
                dead = [c for c in self.children if not c.running()]
                if dead or (self.redis and self.redis.process.poll() is not None):
                    names = ", ".join(f"{c.name} (exit {c.process.returncode})" for c in dead) or "redis"
                    logger.error("hub serve: %s stopped unexpectedly; stopping the rest", names)
                    exit_code = 1
                    break
                time.sleep(POLL_SECONDS)
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return exit_code

    def stop(self) -> None:
        """SIGTERM each child, newest first, and wait for it; SIGKILL one that overstays."""
        for child in reversed(self.children):
            if not child.running():
                continue
            child.process.terminate()
            try:
                child.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                logger.warning("hub serve: %s did not stop in %ss; killing it", child.name, STOP_SECONDS)
                child.process.kill()
                child.process.wait(timeout=STOP_SECONDS)
        if self.redis is not None:
            self.redis.stop()
