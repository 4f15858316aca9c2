"""CPU per request of tenant nodes built from several source trees, side by side in one run (issue 14, goal 2):
the old and the new code of a change (and stock PocketBase), each request type measured in rounds that
alternate between them, CPU read from /proc per process (the node, its Litestream child) and per thread of
the node (its event loop "main", the database threads, granian's threads, the request-log writer).

    git worktree add /tmp/old <commit>; cp pbfast/_native*.so /tmp/old/pbfast/
    python3 benchmarks/cpu_ab.py /tmp/cpu-ab old=/tmp/old new=$PWD --pb --cases create,view --rounds 3 --secs 3

A tree may carry node flags of its own after a colon (``w2=$PWD:--workers=2``, comma-separated), added to
``--node-args``: one tree against itself with other flags (e.g. one worker process against two).

Each tree's node runs with PYTHONPATH and the working directory set to that tree (``python -m pbfast``
imports from its working directory first). The helpers (cluster, seeding, wrk scripts) come from the first
tree. ``--hold`` sets everything up and waits (for py-spy or perf on the printed pids).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LIST_QUERY = "?perPage=20&sort=-created&filter=(num%3E%3D5000)"
BATCH_SIZE = 50


def _stat(path: Path) -> tuple[str, list[str]] | None:
    try:
        raw = path.read_text()
    except OSError:  # exited meanwhile
        return None
    return raw[raw.index("(") + 1: raw.rindex(")")], raw.rsplit(")", 1)[1].split()


def process_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of ``pid`` ("self") and of its live descendants, by program name."""
    parents: dict[int, int] = {}
    seconds: dict[int, float] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(entry / "stat")) is not None:
            names[int(entry.name)], fields = stat
            parents[int(entry.name)] = int(fields[1])
            seconds[int(entry.name)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    out: dict[str, float] = {}
    pending = [pid]
    while pending:
        current = pending.pop()
        key = "self" if current == pid else names.get(current, "?")
        out[key] = out.get(key, 0.0) + seconds.get(current, 0.0)
        pending += [child for child, parent in parents.items() if parent == current]
    return out


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of ``pid`` ("main": the event loop; others by thread id)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        if (stat := _stat(task / "stat")) is not None:
            fields = stat[1]
            out["main" if task.name == str(pid) else "t" + task.name] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


def setup(options: argparse.Namespace, tmp: Path, started: list[Any]) -> list[dict[str, Any]]:
    specs = [(spec.split("=", 1)[0], *spec.split("=", 1)[1].partition(":")[::2]) for spec in options.trees]
    trees = [(name, Path(tree)) for name, tree, _ in specs]
    own_args = {name: tuple(flag for flag in flags.split(",") if flag) for name, _, flags in specs}
    first = trees[0][1]
    sys.path[:0] = [str(first / "tests"), str(first / "benchmarks"), str(first / "tests" / "pocketbase")]
    import httpx
    from bench_tools import SUPERUSER, start_pocketbase, superuser_token
    from cpcluster import ADMIN, CLUSTER_TOKEN, start_cluster
    from helpers import PbfastProcess
    from nodetools import start_node
    from test_auth_bench import _user_token
    from test_files_vs_pocketbase_bench import _multipart, _png, _upload_script
    from test_files_vs_pocketbase_bench import _seed as _seed_photo
    from test_tenant_api_bench import (_create_collection, _create_collection_with_headers, _create_expand_collections,
                                       _lua_create, _seed, _seed_expand)

    upload_body = tmp / "upload.bin"
    upload_body.write_bytes(_multipart(_png()))
    batch = tmp / "batch.lua"
    batch.write_text(_lua_batch())

    def enable_batch(url: str, headers: dict[str, str], token: str) -> None:
        settings: dict[str, Any] = {"batch": {"enabled": True, "maxRequests": BATCH_SIZE}}
        if options.rate_limits:  # on: "allow", rules that never refuse (their checks' cost); "refuse": uploads refused
            uploads = 1 if options.rate_limits == "refuse" else 1_000_000_000
            rules = [{"label": "POST /api/collections/photos/records", "maxRequests": uploads, "duration": 3600,
                      "audience": ""}, {"label": "/api/", "maxRequests": 1_000_000_000, "duration": 60, "audience": ""}]
            settings["rateLimits"] = {"enabled": True, "rules": rules}
        answer = httpx.patch(f"{url}/api/settings", headers={"Authorization": token, **headers}, timeout=30,
                             json=settings)
        assert answer.status_code == 200, answer.text

    targets: list[dict[str, Any]] = []
    for name, tree in trees:
        base_env = {"PYTHONPATH": str(tree)}

        def start(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
                  base_env: dict[str, str] = base_env, tree: Path = tree, name: str = name) -> Any:
            process = PbfastProcess(args, tmp / f"{name}-{len(started)}.log", {**base_env, **(env or {})}, tree)
            started.append(process.start())
            return process

        cp = start_cluster(start, tmp / f"{name}-cp", 1)[0]
        node, node_url = start_node(start, "bench-node", f"127.0.0.1:{cp.http_port}", tmp / f"{name}-nodes",
                                    (*options.node_args.split(), *own_args[name]))
        while not httpx.get(f"{cp.url}/api/cp/nodes", headers=ADMIN).json()["items"]:
            time.sleep(0.05)
        created = httpx.post(f"{cp.url}/api/cp/tenants", headers=ADMIN, json={
            "id": "bench", "superuser": {"email": SUPERUSER[0], "password": SUPERUSER[1]}}).json()
        forward = {"x-pbfast-cluster-token": CLUSTER_TOKEN, "x-pbfast-epoch": str(created["epoch"])}
        url = f"{node_url}/t/bench"
        token = superuser_token(url, forward)
        _create_collection_with_headers(url, token, forward)
        enable_batch(url, forward, token)
        (tmp / f"{name}-batch.lua").write_text(headers_text(forward) + batch.read_text())
        record = _seed(tmp / f"{name}-nodes" / "bench-node" / "tenants" / "bench" / "data.db")
        _create_expand_collections(url, {"Authorization": token, **forward})
        _seed_expand(tmp / f"{name}-nodes" / "bench-node" / "tenants" / "bench" / "data.db")
        headers = tmp / f"{name}-headers.lua"
        headers.write_text("".join(f'wrk.headers["{key}"] = "{value}"\n' for key, value in forward.items()))
        create = tmp / f"{name}-create.lua"
        create.write_text(headers.read_text() + _lua_create(tmp / "create-body.lua").read_text())
        refresh = tmp / f"{name}-refresh.lua"
        refresh.write_text(headers.read_text() + _lua_refresh(_user_token(url, forward, token)))
        if options.bcrypt_cost:
            _rehash_user(url, forward, token, options.bcrypt_cost)
        password = tmp / f"{name}-password.lua"
        password.write_text(headers.read_text() + _lua_password())
        photo = _seed_photo(url, forward, _png())
        if options.upload_rule:  # the guest uploads refused by the photos' create rule (400)
            changed = httpx.patch(f"{url}/api/collections/photos", headers={"Authorization": token, **forward},
                                  json={"createRule": options.upload_rule}, timeout=30)
            assert changed.status_code == 200, changed.text
        targets.append({"name": name, "pid": node.proc.pid, "url": url, "headers": str(headers),
                        "create": str(create), "refresh": str(refresh), "record": record, "password": str(password),
                        "batch": str(tmp / f"{name}-batch.lua"), "photo": photo,
                        "upload": str(_upload_script(tmp / f"{name}-upload.lua", upload_body, forward))})
    if options.pb:
        stock = start_pocketbase(tmp / "stock" / "pb_data")
        started.append(stock)
        _create_collection(stock.url, stock.token)
        enable_batch(stock.url, {}, stock.token)
        _create_expand_collections(stock.url, {"Authorization": stock.token})
        _seed_expand(stock.data_dir / "data.db")
        refresh = tmp / "pb-refresh.lua"
        refresh.write_text(_lua_refresh(_user_token(stock.url, {}, stock.token)))
        if options.bcrypt_cost:
            _rehash_user(stock.url, {}, stock.token, options.bcrypt_cost)
        password = tmp / "pb-password.lua"
        password.write_text(_lua_password())
        targets.append({"name": "pocketbase", "pid": stock.process.pid, "url": stock.url, "headers": None,
                        "create": str(_lua_create(tmp / "pb-create.lua")), "refresh": str(refresh),
                        "password": str(password),
                        "record": _seed(stock.data_dir / "data.db"), "photo": _seed_photo(stock.url, {}, _png()),
                        "batch": str(batch),
                        "upload": str(_upload_script(tmp / "pb-upload.lua", upload_body, {}))})
    return targets


def _rehash_user(url: str, headers: dict[str, str], token: str, cost: int) -> None:
    """The benchmark user's password hashed again at bcrypt ``cost`` (the ``users`` password field's ``cost``, then
    the password set again): both servers check a hash at the cost it was made with, so a login's request path
    shows beside a cheap check."""
    import httpx
    from test_auth_bench import USER
    auth = {"Authorization": token, **headers}
    users = httpx.get(f"{url}/api/collections/users", headers=auth, timeout=30).json()
    fields = [{**field, "cost": cost} if field["type"] == "password" else field for field in users["fields"]]
    answer = httpx.patch(f"{url}/api/collections/users", headers=auth, json={"fields": fields}, timeout=30)
    assert answer.status_code == 200, answer.text
    user = httpx.get(f"{url}/api/collections/users/records", headers=auth, timeout=30).json()["items"][0]
    answer = httpx.patch(f"{url}/api/collections/users/records/{user['id']}", headers=auth, timeout=30,
                         json={"password": USER["password"], "passwordConfirm": USER["password"]})
    assert answer.status_code == 200, answer.text


def headers_text(headers: dict[str, str]) -> str:
    return "".join(f'wrk.headers["{key}"] = "{value}"\n' for key, value in headers.items())


def _lua_batch() -> str:
    """The lines of a wrk script that create :data:`BATCH_SIZE` records of the ``bench`` collection in one
    ``POST /api/batch``."""
    item = {"method": "POST", "url": "/api/collections/bench/records",
            "body": {"title": "created in a batch", "num": 7, "flag": True}}
    body = json.dumps({"requests": [item] * BATCH_SIZE}, separators=(",", ":"))
    return f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = \'{body}\'\n'


def _lua_refresh(user_token: str) -> str:
    """The lines of a wrk script that refresh the benchmark user's token (``auth-refresh``)."""
    return f'wrk.method = "POST"\nwrk.headers["Authorization"] = "{user_token}"\n'


def _lua_password() -> str:
    """The lines of a wrk script that log the benchmark user in with its password (``auth-with-password``)."""
    from test_auth_bench import USER
    body = json.dumps({"identity": USER["email"], "password": USER["password"]}, separators=(",", ":"))
    return f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = \'{body}\'\n'


def _wait_idle(pid: int, limit: float = 15.0) -> None:
    """Until ``pid``'s processes use under a tenth of a core (at most ``limit`` seconds)."""
    deadline = time.monotonic() + limit
    used = sum(process_cpu(pid).values())
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = sum(process_cpu(pid).values())
        if now - used < 0.05:
            return
        used = now


def measure(target: dict[str, Any], case: str, seconds: float, connections: int,
            refused: bool = False) -> tuple[float, str]:
    """CPU us per request of the target's processes during one wrk run, and the line that says so (``refused``:
    the answers are refusals, e.g. 429, not successes)."""
    path = "/api/collections/bench/records"
    script = target[case] if case in ("create", "refresh", "password", "upload", "batch") else target["headers"]
    if case == "batch":
        path = "/api/batch"
    elif case == "expand":
        path = "/api/collections/posts/records?perPage=20&sort=-created&expand=author.org"
    elif case == "upload":
        path = "/api/collections/photos/records"
    elif case in ("download", "thumb"):
        path = target["photo"] + ("?thumb=100x100" if case == "thumb" else "")
    elif case == "refresh":
        path = "/api/collections/users/auth-refresh"
    elif case == "password":
        path = "/api/collections/users/auth-with-password"
    elif case == "view":
        path += "/" + target["record"]
    elif case == "list":
        path += LIST_QUERY
    args = ["-s", script] if script else []
    subprocess.run(["wrk", "-t1", "-c8", "-d1s", *args, target["url"] + path], capture_output=True, check=True)
    _wait_idle(target["pid"])  # e.g. PocketBase still checking the passwords of the warm-up's closed connections
    before, threads_before = process_cpu(target["pid"]), thread_cpu(target["pid"])
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", *args, target["url"] + path],
                         capture_output=True, text=True, check=True).stdout
    after, threads_after = process_cpu(target["pid"]), thread_cpu(target["pid"])
    assert ("Non-2xx" in out) == refused, out
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    processes = {key: (after[key] - before.get(key, 0.0)) / requests * 1e6 for key in after}
    threads = {key: (threads_after[key] - threads_before.get(key, 0.0)) / requests * 1e6 for key in threads_after}
    total = sum(processes.values())
    shown = {key: round(value) for key, value in sorted(threads.items(), key=lambda item: -item[1]) if value >= 1}
    return total, (f"{total:6.0f} us/req {rate:7.0f} req/s  processes "
                   f"{ {key: round(value) for key, value in processes.items() if value >= 0.5} }  threads {shown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tmp", help="a scratch directory (short: Litestream's socket path must fit 108 bytes)")
    parser.add_argument("trees", nargs="+", help="name=/path/to/a/checkout")
    parser.add_argument("--cases", default="create,view", help="of create, view, list, refresh (auth-refresh of a user), password (auth-with-password of a user), upload (100 KB PNG, multipart "
                        "record create), download (that PNG), thumb (its kept 100x100 thumb), batch (50 creates in one "
                        "POST /api/batch), expand (a list of 20 posts with expand=author.org)")
    parser.add_argument("--secs", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--pb", action="store_true", help="stock PocketBase too")
    parser.add_argument("--hold", action="store_true", help="set up, print the targets, wait")
    parser.add_argument("--node-args", default="")
    parser.add_argument("--bcrypt-cost", type=int, default=0,
                        help="the benchmark user's password hashed at this bcrypt cost (4: a login's request path shows)")
    parser.add_argument("--rate-limits", choices=("allow", "refuse"),
                        help="the tenant's rate limits on: rules that never refuse (their checks' cost), or that refuse "
                        "every upload but the first (429)")
    parser.add_argument("--upload-rule", help="the photos collection's create rule, one that refuses the guest uploads "
                        "(e.g. \"@request.auth.id != ''\"): their answers are 400")
    options = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # the processes are stopped below
    tmp = Path(options.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    started: list[Any] = []
    try:
        targets = setup(options, tmp, started)
        print(json.dumps(targets, indent=1), flush=True)
        while options.hold:
            time.sleep(3600)
        results: dict[tuple[str, str], list[float]] = {}
        for case in options.cases.split(","):
            for round_index in range(options.rounds):
                for target in targets if round_index % 2 == 0 else list(reversed(targets)):
                    total, line = measure(target, case, options.secs, options.connections,
                                          refused=case == "upload" and (options.rate_limits == "refuse"
                                                                        or bool(options.upload_rule)))
                    results.setdefault((case, target["name"]), []).append(total)
                    print(f"{case:7s} r{round_index} {target['name']:10s} {line}", flush=True)
        print("\nCPU us per request (min / median / all):")
        for (case, name), values in results.items():
            values.sort()
            print(f"{case:7s} {name:10s} {values[0]:6.0f} {values[len(values) // 2]:6.0f}  {[round(v) for v in values]}")
    finally:
        for process in started:
            process.stop()


if __name__ == "__main__":
    main()
