"""The request log writer's cost per row, in process: ``cpu`` times a flush of ``BATCH`` queued logs for each batch
size given (process CPU per row, and the queue's drain, the native formatting, alone), ``instructions`` counts the
instructions of ``K`` flushes of ``BATCH`` logs under callgrind (only the flushes are instrumented). The logs are
those of a view (``benchmarks/request_log_cost.py``'s scope), written into a real ``auxiliary.db`` that grows
across the batches as in a node.

    PYTHONPATH=$PWD python3 profiling/request_log_writer.py cpu 80000 2000 8000 16000 40000
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=/tmp/cgw.out \\
        $(python3 -c 'import sys; print(sys.executable)') profiling/request_log_writer.py instructions 2000 3
    callgrind_annotate --inclusive=yes /tmp/cgw.out | head -60     # totals / (BATCH * K) = instructions a row
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from request_log_cost import PATH, BenchScope  # noqa: E402 - after the path above

from pbfast.http import HeldResponse  # noqa: E402
from pbfast.pocketbase.apis import logs  # noqa: E402
from pbfast.pocketbase.apis.request import TenantRequest  # noqa: E402
from pbfast.pocketbase.collections.database import init_tenant_database  # noqa: E402
from pbfast.pocketbase.request_logs import RequestLogs  # noqa: E402
from pbfast.pocketbase.tenant import Tenant  # noqa: E402


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _instrument(state: str) -> None:
    subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True, capture_output=True)


def main() -> None:
    mode, numbers = sys.argv[1], [int(argument) for argument in sys.argv[2:]]
    directory = Path(tempfile.mkdtemp()) / "t"
    init_tenant_database(directory)
    tenant = Tenant.open("t", directory)
    request = TenantRequest(BenchScope(headers={"user-agent": "wrk/4.2.0"}), HeldResponse(), PATH,
                            {"collection": "bench", "id": "abcdefghij12345"}, tenant)

    def queue(writer: RequestLogs, count: int) -> None:
        for _ in range(count):
            entry = logs.request_entry(request, time.perf_counter(), 200, None, False)
            assert entry is not None
            writer.add(entry)

    if mode == "instructions":
        batch, flushes = numbers
        writer = RequestLogs(capacity=batch + 10, batch=10**9, interval=3600)
        writer._thread = writer._wake  # type: ignore[assignment]  # any object: no writer thread, flush() writes
        for _ in range(3):  # warm: statements prepared, the table's last pages in place
            queue(writer, batch)
            writer.flush()
        for _ in range(flushes):
            queue(writer, batch)
            _instrument("on")
            writer.flush()
            _instrument("off")
        os._exit(0)
    total = numbers[0]
    for batch in numbers[1:]:
        writer = RequestLogs(capacity=batch + 10, batch=10**9, interval=3600)
        writer._thread = writer._wake  # type: ignore[assignment]
        spent = drained = 0.0
        for _ in range(total // batch):
            queue(writer, batch)
            started = _cpu()
            by_tenant = writer._drain()
            formatted = _cpu()
            writer._write(by_tenant)
            spent, drained = spent + _cpu() - started, drained + formatted - started
        rows = total // batch * batch
        print(f"batch {batch:6,}: {spent / rows * 1e6:.2f} us CPU a row, of which the drain (formatting) "
              f"{drained / rows * 1e6:.2f} us")
        writer._thread = None  # (no thread to stop)
        writer.close()
    tenant.close()


if __name__ == "__main__":
    main()
