"""What request logging costs in CPU, without HTTP: a loop on the main thread stands for the event loop (~13 µs of
Python per request), and with ``on`` builds each request's log and queues it for the real writer thread, which
writes to a real ``auxiliary.db``; ``entry`` builds the log and drops it. Prints the process's CPU per request
(all threads, the writer's work included) and the main thread's. With the serving process's GC settings.

Run, e.g. alternating two trees (a checkout of an earlier commit with its .so copied in)::

    for round in 1 2 3; do for tree in <old> <new>; do for mode in off entry on; do
        (cd $tree && PYTHONPATH=$tree python3 benchmarks/request_log_cost.py $mode 40000); done; done; done
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pbfast.gc_tuning import tune_for_serving
from pbfast.http import HeldResponse
from pbfast.pocketbase.apis import logs
from pbfast.pocketbase.apis.request import TenantRequest
from pbfast.pocketbase.collections.database import init_tenant_database
from pbfast.pocketbase.request_logs import RequestLogs
from pbfast.pocketbase.tenant import Tenant

PATH = "/api/collections/bench/records/abcdefghij12345"


@dataclass
class BenchScope:
    """The RSGI scope of a logged view (also used by test_request_log_cost_bench.py)."""

    proto: str = "http"
    method: str = "GET"
    path: str = PATH
    query_string: str = ""
    authority: str | None = None
    client: str = "10.1.2.3:50000"
    headers: dict[str, str] = field(default_factory=lambda: {"user-agent": "wrk"})


def _view() -> int:
    total = 0
    for number in range(600):
        total += number
    return total


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(mode: str, requests: int) -> None:
    directory = Path(tempfile.mkdtemp()) / "t"
    init_tenant_database(directory)
    tenant = Tenant.open("t", directory)
    request = TenantRequest(BenchScope(), HeldResponse(), PATH, {"collection": "bench", "id": "abcdefghij12345"}, tenant)
    writer = RequestLogs()
    tune_for_serving()

    def serve(count: int) -> None:
        for _ in range(count):
            started = time.perf_counter()
            _view()
            if mode == "on":
                entry = logs.request_entry(request, started, 200, None, False)
                assert entry is not None
                writer.add(entry)
            elif mode == "entry":
                logs.request_entry(request, started, 200, None, False)

    serve(2000)  # warm-up
    time.sleep(1.2)
    cpu, main_cpu = _cpu(), time.thread_time()
    serve(requests)
    main_cpu = time.thread_time() - main_cpu
    time.sleep(1.5)  # the writer's last batch
    cpu = _cpu() - cpu
    print(f"{mode}: {cpu / requests * 1e6:.2f} us CPU per request, main thread {main_cpu / requests * 1e6:.2f} us, "
          f"{writer.written:,} rows written")
    writer.close()
    tenant.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
