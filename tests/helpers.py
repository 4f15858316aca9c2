"""Test helpers: free loopback ports and real ``pbfast serve`` processes (fixture ``pbfast_process``)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final
from pathlib import Path

import httpx
import pytest


_HANDED_OUT: set[int] = set()


def _port_range() -> range:
    """Where :func:`free_port` looks: below the kernel's ephemeral range, so that no outgoing connection (of
    any process) takes a port between our check and the server's bind; each pytest-xdist worker in its own
    slice, so that two workers never pick the same one. The whole ephemeral range when there is no room."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    if low < 12_000:
        return range(0)
    first, last = 10_000, low - 1
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    size = (last - first) // max(workers, 1)
    return range(first + worker * size, first + (worker + 1) * size)


_PORTS: Final = _port_range()
_next_port = random.randrange(len(_PORTS)) if _PORTS else 0


def free_port() -> int:
    """A loopback TCP port that was free a moment ago, never the same twice in one test run (the kernel
    may hand a just-closed port out again, and one start-up asks for several: HTTP and Raft, say)."""
    global _next_port  # noqa: PLW0603 - the walk through this process's slice
    for _ in range(len(_PORTS)):
        port = _PORTS[_next_port % len(_PORTS)]
        _next_port += 1
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    while True:  # no slice: the kernel's choice
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


@contextlib.contextmanager
def moto_s3_server(bucket: str, port: int | None = None) -> Iterator[str]:
    """moto's S3 server (the real S3 protocol over HTTP) on loopback with ``bucket`` created; yields the
    endpoint URL. Credentials: any, e.g. ``AWS_ACCESS_KEY_ID=testing``."""
    from moto.server import ThreadedMotoServer  # noqa: PLC0415 - only the S3 tests need moto

    port = port or free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        import boto3  # noqa: PLC0415

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        server.stop()


@dataclass
class PbfastProcess:
    """A ``pbfast`` child process with its combined output captured to a file."""

    args: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    program: list[str] = field(default_factory=lambda: [sys.executable, "-m", "pbfast"])  # how pbfast is started

    def start(self) -> PbfastProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*self.program, *self.args], stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=self.cwd,
        )
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, urls: Sequence[str], timeout: float = 30.0) -> float:
        """Wait until every ``url``'s ``/api/health`` answers 200; returns the seconds it took (tests that
        promise a start-up time assert on it: the timeout is only how long to wait on a loaded machine)."""
        assert self.proc is not None
        started = time.monotonic()
        pending = list(urls)
        while pending:
            if self.proc.poll() is not None:
                raise AssertionError(f"pbfast exited with {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() - started > timeout:
                raise AssertionError(f"not healthy after {timeout}s: {pending}\n{self.output()}")
            try:
                if httpx.get(pending[0] + "/api/health", timeout=1.0).status_code == 200:
                    pending.pop(0)
                    continue
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        return time.monotonic() - started

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def pbfast_process(tmp_path: Path) -> Iterator[Callable[..., PbfastProcess]]:
    """Factory: ``pbfast_process(args, env=None, cwd=None, program=None)`` starts a process (``program``: how
    pbfast is run, default ``python -m pbfast``); all are stopped at teardown."""
    started: list[PbfastProcess] = []

    def start(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
              program: list[str] | None = None) -> PbfastProcess:
        process = PbfastProcess(args, tmp_path / f"pbfast-{len(started)}.log", env or {}, cwd)
        if program is not None:
            process.program = program
        process.start()
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc is not None and process.proc.poll() is None:
            process.stop(signal.SIGKILL)


def freeze(pid: int) -> None:
    """SIGSTOP ``pid`` (all its threads) and wait until the kernel reports it stopped: a signal is delivered
    asynchronously, and a thread running on another CPU could otherwise still answer one more request."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 5
    task_dir = Path(f"/proc/{pid}/task")
    while True:
        states = []
        for task in task_dir.iterdir():
            try:
                states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
            except (OSError, IndexError):
                continue
        if states and all(state in ("T", "t") for state in states):
            return
        assert time.monotonic() < deadline, f"process {pid} did not stop: {states}"
        time.sleep(0.005)


def thaw(pid: int) -> None:
    """SIGCONT ``pid`` if it still exists."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


class FakeHeaders:
    """The read side of granian's RSGI headers (``items``, ``get``, ``in``) for handlers called without a server."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def get(self, name: str, default: object = None) -> object:
        return next((v for k, v in self._items if k == name), default)

    def __contains__(self, name: str) -> bool:
        return any(k == name for k, _ in self._items)
