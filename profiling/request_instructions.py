"""Count the CPU instructions of N tenant requests through a node's own layers, in process (callgrind): a
figure that does not move with the machine's load, unlike CPU time on a shared 2-core VM. The node, its tenant
and the 10,000 records are ``benchmarks/test_request_path_bench.py``'s; callgrind counts only while the
requests run (the set-up is not instrumented), every thread of the process, one file per thread.

    valgrind --tool=callgrind --instr-atstart=no --separate-threads=yes --callgrind-out-file=/tmp/cg.out \\
        $(python3 -c 'import sys; print(sys.executable)') profiling/request_instructions.py create 400
    grep -m1 '^totals:' /tmp/cg.out-01      # the event loop's thread: instructions of the 400 requests

``create16``: creates 16 at a time (gathered on the loop, as 16 clients' requests ready together), which the node
commits in groups (:mod:`pbfast.tenant_node.group_commit`); ``create``: one after another.

``aio-view``, ``aio-list``, ``aio-create``: the same requests the way an all-in-one (the default ``pbfast serve``)
serves them: from a client over TCP to the native gateway, which hands them to the event loop through its
in-process queue (:mod:`pbfast.gateway.in_process`), through the gateway's RSGI app to the node. The client is a
separate process (not counted); the gateway's native threads are counted in their own files.

Run the real interpreter, not a pyenv shim (valgrind would count the shell). Compare two source trees by
running each from its own checkout with ``PYTHONPATH`` set to it; the event loop thread's total varies by
~1 % between runs of the same code, the other threads' (the request-log writer batches) by more.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests"), str(ROOT / "tests" / "pocketbase")]

import pbfast.tenant_node.inline_tries as inline_tries  # noqa: E402 - after the paths above
from test_request_path_bench import CREATE_BODY, LIST_QUERY, Bench, bench, request_loop  # noqa: E402

# The all-in-one's client: sends "go N"'s N requests one after another on one keep-alive connection, then
# says "done". Plain sockets: the answers are short, with a Content-Length.
_CLIENT = r"""
import socket, sys
port, request = int(sys.argv[1]), bytes.fromhex(sys.argv[2])
conn = socket.create_connection(("127.0.0.1", port))
for line in sys.stdin:
    for _ in range(int(line.split()[1])):
        conn.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += conn.recv(65536)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), answer
        length = int(next(l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")).split(b":")[1])
        while len(body) < length:
            body += conn.recv(65536)
    print("done", flush=True)
"""


class _TempPaths:
    """pytest's ``tmp_path_factory``, as much of it as the fixture uses."""

    def mktemp(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=name))


def _instrument(state: str) -> None:
    subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True, capture_output=True)


def _aio_request(node_bench: Bench, case: str) -> bytes:
    """The raw HTTP request of ``case``."""
    if case == "create":
        return (b"POST /t/bench/api/collections/bench/records HTTP/1.1\r\nhost: localhost\r\n"
                b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(CREATE_BODY), CREATE_BODY))
    target = (f"/t/bench/api/collections/bench/records?{LIST_QUERY}" if case == "list"
              else f"/t/bench/api/collections/bench/records/{node_bench.record_id}")
    return f"GET {target} HTTP/1.1\r\nhost: localhost\r\n\r\n".encode()


def _all_in_one(node_bench: Bench, case: str, count: int) -> None:
    """``count`` requests of ``case`` through an all-in-one's native gateway and in-process hand-over."""
    from pbfast._native import GatewayServer, InProcessQueue
    from pbfast.gateway.app import GatewayApp
    from pbfast.gateway.in_process import InProcessDispatcher
    from pbfast.gateway.metrics import LATENCY_BUCKETS, GatewayMetrics
    from pbfast.gateway.routes import RouteWatcher
    from pbfast.primitives import CircuitBreakers, RoutingTable

    loop, node = node_bench.loop, node_bench.node
    routes = RoutingTable("pb.test")
    watcher = RouteWatcher(None, routes)  # type: ignore[arg-type]  # never run: the table is applied here
    watcher.apply({"version": 1, "routes": [
        {"tenantId": "bench", "address": "local://node", "epoch": 1, "status": "active"}]})
    app = GatewayApp(watcher, {"local://node": node.serve_tenant}, None, GatewayMetrics(), trust_client_header=True)
    queue = InProcessQueue(4096)
    server = GatewayServer(routes, CircuitBreakers(2, 30.0, 1), "cluster-token", Path(tempfile.mkdtemp()) / "py.sock",
                           latency_buckets=list(LATENCY_BUCKETS), threads=1, in_process=queue)
    InProcessDispatcher(queue, app.__rsgi__).attach(loop)
    port = server.start("127.0.0.1", 0)

    async def run() -> None:
        client = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CLIENT, str(port), _aio_request(node_bench, case).hex(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert client.stdin is not None and client.stdout is not None

        async def requests(n: int) -> None:
            client.stdin.write(f"go {n}\n".encode())  # type: ignore[union-attr]
            assert await client.stdout.readline() == b"done\n"  # type: ignore[union-attr]

        await requests(50)  # warm: statements compiled, plans made, the connection open
        _instrument("on")
        await requests(count)
        _instrument("off")

    loop.run_until_complete(run())


def main() -> None:
    case = sys.argv[1] if len(sys.argv) > 1 else "create"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 400
    # Under valgrind everything runs ~50x slower: without this the inline budget would send every write to the
    # database threads, which a real machine does not do.
    inline_tries.INLINE_BUDGET_SECONDS = 5.0
    fixture = bench.__wrapped__(_TempPaths())  # type: ignore[attr-defined]
    node_bench = next(fixture)
    if case.startswith("aio-"):
        _all_in_one(node_bench, case[4:], count)
        os._exit(0)
    request_loop(node_bench, case, 50)  # warm: statements compiled, plans made
    _instrument("on")
    request_loop(node_bench, case, count)
    _instrument("off")
    os._exit(0)  # the node's threads are not stopped: nothing after the count matters


if __name__ == "__main__":
    main()
