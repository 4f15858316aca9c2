"""The profiling listener (``--pprof-addr``): Go's ``net/http/pprof`` endpoints, so the commands people use
on Go services work on every pbfast mode.

- ``GET /debug/pprof/`` an index of what follows;
- ``GET /debug/pprof/profile?seconds=N`` a CPU profile of the whole process over N seconds (default 30),
  gzipped pprof protobuf (:mod:`pbfast.profiling.cpu`);
- ``GET /debug/pprof/heap`` a heap profile in the same format (:mod:`pbfast.profiling.heap`): by type now,
  or with ``?seconds=N`` by allocating stack over a window; ``?gc=1`` collects garbage first;
- ``GET /debug/pprof/flamegraph?seconds=N`` the CPU profile as a self-contained SVG flame graph.

One CPU profile and one heap profile at a time (another gets 409). Errors are PocketBase-shaped JSON. The
listener is loopback-only unless the operator says otherwise; on any other address every request needs the
cluster token (or, where there is one, the admin token): see docs/security.md.
"""

from __future__ import annotations

import asyncio
import threading
import tracemalloc
from collections.abc import Awaitable, Callable
from html import escape
from typing import TypeVar

from pbfast.http import ApiError, HTTPProtocol, Request, Scope, bearer_token_matches, send_error, send_json
from pbfast.logs import component_logger
from pbfast.profiling.cpu import CpuProfile, CpuSampler, ProfilingUnavailable, to_pprof
from pbfast.profiling.flamegraph import flamegraph_svg
from pbfast.profiling.heap import TracingWindow, census_profile, traced_profile

__all__ = ["DEFAULT_PROFILE_SECONDS", "MAX_PROFILE_SECONDS", "ProfilingApp"]

log = component_logger("Profiling")

T = TypeVar("T")

DEFAULT_PROFILE_SECONDS = 30  # as Go's /debug/pprof/profile
DEFAULT_FLAMEGRAPH_SECONDS = 10
MAX_PROFILE_SECONDS = 600
PREFIX = "/debug/pprof"
_PROFILE_HEADERS = [("content-type", "application/octet-stream"), ("x-content-type-options", "nosniff")]

_INDEX = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title></head><body>
<h1>{title}</h1>
<p>Profiles of this process in pprof's format (gzipped protobuf), for <code>go tool pprof</code> and other pprof
readers, as Go's <code>net/http/pprof</code> serves them.</p>
<table>
<tr><td><a href="profile?seconds=30">profile</a></td><td>CPU profile of every thread over <code>seconds</code>
(default 30), weighted by the CPU each used: <code>go tool pprof {base}/profile?seconds=30</code></td></tr>
<tr><td><a href="heap">heap</a></td><td>Python memory in use now, by type; with <code>?seconds=N</code> by allocating
stack, of what was allocated in the next N seconds and is still alive (tracing slows the process meanwhile);
<code>?gc=1</code> collects garbage first: <code>curl {base}/heap &gt; heap.prof</code></td></tr>
<tr><td><a href="flamegraph?seconds=10">flamegraph</a></td><td>the CPU profile as an SVG flame graph, for a
browser (default 10 seconds)</td></tr>
</table>
</body></html>
"""


class ProfilingApp:
    """RSGI app of the profiling listener. ``tokens``: bearer tokens every request must carry one of (None: no
    token needed, for loopback). Thread-safety: event loop only; samplers run on their own threads."""

    def __init__(self, title: str, tokens: list[str] | None, base_url: str) -> None:
        self._title = title
        self._tokens = tokens
        self._base_url = base_url.rstrip("/") + PREFIX
        self._stop = threading.Event()
        self._cpu_busy = False
        self._heap_busy = False
        self._routes: dict[str, Callable[[Request], Awaitable[None]]] = {
            PREFIX: self.index,
            PREFIX + "/": self.index,
            PREFIX + "/profile": self.cpu_profile,
            PREFIX + "/heap": self.heap_profile,
            PREFIX + "/flamegraph": self.flamegraph,
        }

    def close(self) -> None:
        """Stop a profile being taken (shutdown): it ends with what it has so far."""
        self._stop.set()

    async def __rsgi__(self, scope: Scope, proto: HTTPProtocol) -> None:
        if scope.proto != "http":
            return
        if self._tokens is not None and not any(
                bearer_token_matches(scope.headers.get("authorization"), token) for token in self._tokens):
            send_error(proto, 401, "The profiling listener requires the cluster token.")
            return
        handler = self._routes.get(scope.path)
        if handler is None:
            send_error(proto, 404)
            return
        if scope.method not in ("GET", "HEAD"):
            send_error(proto, 405, headers=[("allow", "GET, HEAD")])
            return
        request = Request(scope, proto, scope.path, {})
        try:
            await handler(request)
        except ApiError as err:
            send_json(proto, err.status, err.body(), err.headers)
        except Exception as err:  # noqa: BLE001 - the listener must answer, and the server stay up
            log.error("%s %s failed: %r", scope.method, scope.path, err, exc_info=err)
            send_error(proto, 500)

    async def index(self, request: Request) -> None:
        body = _INDEX.format(title=escape(self._title), base=escape(self._base_url))
        request.proto.response_bytes(200, [("content-type", "text/html; charset=utf-8")], body.encode())

    def _seconds(self, request: Request, default: int) -> int:
        raw = request.query("seconds")
        if raw is None or raw == "":
            return default
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_PROFILE_SECONDS:
            raise ApiError(400, f"Invalid 'seconds' query parameter: expected a whole number from 1 to "
                                f"{MAX_PROFILE_SECONDS}.")
        return int(raw)

    async def _sample(self, seconds: int) -> CpuProfile:
        if self._cpu_busy:
            raise ApiError(409, "A CPU profile is already being taken; retry when it is done.")
        self._cpu_busy = True
        sampler = CpuSampler()
        sampler.start_main_signal()
        try:
            return await self._on_thread(lambda: sampler.run(seconds, self._stop))
        except ProfilingUnavailable as err:
            raise ApiError(501, f"CPU profiles are not available on this platform: {err}.") from err
        finally:
            sampler.stop_main_signal()
            self._cpu_busy = False

    async def cpu_profile(self, request: Request) -> None:
        seconds = self._seconds(request, DEFAULT_PROFILE_SECONDS)
        log.info("CPU profile for %d s requested by %s", seconds, request.scope.client)
        profile = await self._sample(seconds)
        body = await asyncio.to_thread(lambda: to_pprof(profile).gzipped())
        request.proto.response_bytes(200, [*_PROFILE_HEADERS, ("content-disposition", 'attachment; filename="profile"')],
                                     body)

    async def flamegraph(self, request: Request) -> None:
        seconds = self._seconds(request, DEFAULT_FLAMEGRAPH_SECONDS)
        profile = await self._sample(seconds)
        title = f"{self._title}: CPU flame graph, {seconds} s"
        body = await asyncio.to_thread(flamegraph_svg, profile, title)
        request.proto.response_bytes(200, [("content-type", "image/svg+xml")], body)

    async def heap_profile(self, request: Request) -> None:
        collect_first = request.query("gc", "0") not in ("", "0")
        window = self._seconds(request, 0) if request.query("seconds") else None
        if self._heap_busy:
            raise ApiError(409, "A heap profile is already being taken; retry when it is done.")
        self._heap_busy = True
        try:
            if window is not None:
                log.info("tracing allocations for %d s (heap profile requested by %s)", window, request.scope.client)
                tracing = TracingWindow(window)
                tracing.begin()
                try:
                    await asyncio.to_thread(self._stop.wait, window)
                    body = await asyncio.to_thread(lambda: traced_profile(collect_first, tracing).gzipped())
                finally:
                    tracing.end()
            elif tracemalloc.is_tracing():  # since start: PYTHONTRACEMALLOC
                body = await asyncio.to_thread(lambda: traced_profile(collect_first).gzipped())
            else:
                body = await asyncio.to_thread(lambda: census_profile(collect_first).gzipped())
        finally:
            self._heap_busy = False
        request.proto.response_bytes(200, [*_PROFILE_HEADERS, ("content-disposition", 'attachment; filename="heap"')],
                                     body)

    @staticmethod
    async def _on_thread(work: Callable[[], T]) -> T:
        """Run ``work`` on a thread of its own named ``pbfast-profiler`` (so it is easy to tell apart in
        thread listings) and wait for it without blocking the loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(outcome: T | None, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(outcome)  # type: ignore[arg-type]

        def run() -> None:
            try:
                outcome, error = work(), None
            except BaseException as err:  # noqa: BLE001 - handed to the waiting request
                outcome, error = None, err
            try:
                loop.call_soon_threadsafe(settle, outcome, error)
            except RuntimeError:  # the loop closed meanwhile (shutdown): nobody waits any more
                pass

        threading.Thread(target=run, name="pbfast-profiler", daemon=True).start()
        return await future
