"""Count the CPU instructions of N tenant requests through a node's own layers, in process (callgrind): a
figure that does not move with the machine's load, unlike CPU time on a shared 2-core VM. The node, its tenant
and the 10,000 records are ``benchmarks/test_request_path_bench.py``'s; callgrind counts only while the
requests run (the set-up is not instrumented), every thread of the process, one file per thread.

    valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes --callgrind-out-file=/tmp/cg.out \\
        $(python3 -c 'import sys; print(sys.executable)') profiling/request_instructions.py create 400
    grep -m1 '^totals:' /tmp/cg.out-01      # the event loop's thread: instructions of the 400 requests

Run the real interpreter, not a pyenv shim (valgrind would count the shell). Compare two source trees by
running each from its own checkout with ``PYTHONPATH`` set to it; the event loop thread's total varies by
~1 % between runs of the same code, the other threads' (the request-log writer batches) by more.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests"), str(ROOT / "tests" / "pocketbase")]

import pbfast.tenant_node.inline_tries as inline_tries  # noqa: E402 - after the paths above
from test_request_path_bench import bench, request_loop  # noqa: E402


class _TempPaths:
    """pytest's ``tmp_path_factory``, as much of it as the fixture uses."""

    def mktemp(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=name))


def _instrument(state: str) -> None:
    subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True, capture_output=True)


def main() -> None:
    case = sys.argv[1] if len(sys.argv) > 1 else "create"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 400
    # Under valgrind everything runs ~50x slower: without this the inline budget would send every write to the
    # database threads, which a real machine does not do.
    inline_tries.INLINE_BUDGET_SECONDS = 5.0
    fixture = bench.__wrapped__(_TempPaths())  # type: ignore[attr-defined]
    node_bench = next(fixture)
    request_loop(node_bench, case, 50)  # warm: statements compiled, plans made
    _instrument("on")
    request_loop(node_bench, case, count)
    _instrument("off")
    os._exit(0)  # the node's threads are not stopped: nothing after the count matters


if __name__ == "__main__":
    main()
