"""All-in-ones of several trees or flags, each with the same tenants (the many-tenants benchmark's data), the
same requests alternated round by round between them (issue 14): one tree against itself with other flags
(``--workers=1`` against ``--workers=2``), or the old and the new code of a change.

    python3 benchmarks/all_in_one_ab.py /tmp/aio-ab --tenants 100 --rounds 3 --secs 10 \
        --cases mix,view1,list1,create1 w1=$PWD:--workers=1 w2=$PWD:--workers=2

``mix``: the many-tenants benchmark's mix (70 % view, 20 % list, 10 % create) uniform over the tenants;
``view1``/``list1``/``create1``: one hot tenant's view by id, list (filter + sort, perPage 20), create, through
the gateway. Per round and side (one JSON line): req/s, p99, non-2xx, CPU seconds per 10,000 requests of every
process of the side (/proc), split by process name (``main``, ``pbfast-worker<N>``, ``litestream``...). Every
all-in-one runs with ``--node-timeout=30`` (a loaded machine starves heartbeats; a fence mid-run is not the
figure wanted) and keeps every tenant open. The helpers come from this file's tree.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from typing import Any

import httpx

HERE = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(HERE / "tests"), str(HERE / "tests" / "pocketbase"), str(HERE / "benchmarks")]
from helpers import PbfastProcess  # noqa: E402
from pbharness import ADMIN_TOKEN, start_all_in_one  # noqa: E402
from test_many_tenants_bench import MIX_LUA, RECORDS, _copy_data, _template  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> dict[str, float]:
    """CPU seconds of ``root`` (``main``) and its live descendants, summed by program name."""
    children: dict[int, list[int]] = {}
    info: dict[int, tuple[str, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1: raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        pid = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(pid)
        info[pid] = (name, (int(fields[11]) + int(fields[12])) / TICK)
    out: dict[str, float] = {}
    todo, seen = [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in info:
            continue
        seen.add(pid)
        name, secs = info[pid]
        key = "main" if pid == root else name
        out[key] = out.get(key, 0.0) + secs
        todo.extend(children.get(pid, []))
    return out


def wrk(url: str, script: Path | None, conns: int, secs: int) -> tuple[int, float, float, int]:
    """``(requests, req/s, p99 ms, non-2xx)`` of one wrk run."""
    args = ["-s", str(script)] if script else []
    text = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{secs}s", "--latency", *args, url],
                          capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    match = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\b", text, re.M)
    assert match is not None, text
    p99 = float(match.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[match.group(2)]
    non = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return requests, rate, p99, int(non.group(1)) if non else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("sides", nargs="+", help="name=/path/to/a/checkout[:--flag,--flag]")
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--secs", type=int, default=10)
    parser.add_argument("--conns", type=int, default=64)
    parser.add_argument("--cases", default="mix,view1,list1,create1")
    options = parser.parse_args()
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    template = _template(out / "template")
    tenants = options.tenants
    mix = out / "mix.lua"
    mix.write_text(MIX_LUA.format(tenants=tenants, records=RECORDS))
    create = out / "create.lua"
    create.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      'wrk.body = \'{"title":"by wrk","num":7}\'\n')
    sides: list[dict[str, Any]] = []
    started: list[PbfastProcess] = []
    try:
        for spec in options.sides:
            name, rest = spec.split("=", 1)
            tree, _, flags = rest.partition(":")
            data = out / f"{name}-data"
            for i in range(tenants):
                _copy_data(template, data / "tenants" / f"t{i}")

            def start(args: list[str], tree: str = tree, name: str = name) -> PbfastProcess:
                process = PbfastProcess(args, out / f"{name}.log", {"PYTHONPATH": tree}, Path(tree)).start()
                started.append(process)
                return process

            extra = [f"--max-tenants={tenants + 10}", "--node-timeout=30", *[f for f in flags.split(",") if f]]
            process, cp, gw = start_all_in_one(start, data, *extra)
            assert process.proc is not None
            with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
                for i in range(tenants):
                    assert client.post(f"{cp}/api/cp/tenants", json={"id": f"t{i}"}).status_code == 200
            deadline = time.monotonic() + 120 + tenants

            def served(i: int, gw: str = gw, deadline: float = deadline) -> None:
                while httpx.get(f"{gw}/t/t{i}/api/health", timeout=60).status_code != 200:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(served, range(tenants)))
            with httpx.Client(timeout=60) as client:
                for i in range(tenants):
                    assert client.get(f"{gw}/t/t{i}/api/collections/posts/records/{0:015d}").status_code == 200
            sides.append({"name": name, "pid": process.proc.pid, "gw": gw})
            print(f"side {name} up: pid {process.proc.pid} {gw}", flush=True)
        base = "/t/t0/api/collections/posts/records"
        cases: dict[str, tuple[str, Path | None]] = {"mix": ("/", mix), "view1": (f"{base}/{1:015d}", None),
                 "list1": (f"{base}?perPage=20&sort=-created&filter=(num%3E%3D500)", None),
                 "create1": (base, create)}
        results = []
        for case in options.cases.split(","):
            path, script = cases[case]
            for round_ in range(options.rounds):
                for side in sides if round_ % 2 == 0 else sides[::-1]:
                    subprocess.run(["wrk", "-t1", "-c8", "-d1s", *(["-s", str(script)] if script else []),
                                    side["gw"] + path], capture_output=True, check=True)
                    time.sleep(1.0)
                    load = os.getloadavg()[0]
                    before = tree_cpu(side["pid"])
                    requests, rate, p99, non = wrk(side["gw"] + path, script, options.conns, options.secs)
                    after = tree_cpu(side["pid"])
                    split = {k: round((after[k] - before.get(k, 0.0)) / requests * 1e4, 2) for k in after
                             if after[k] - before.get(k, 0.0) > 0.005}
                    row = {"case": case, "round": round_, "side": side["name"], "load": round(load, 1),
                           "req_s": round(rate), "p99_ms": round(p99, 1), "non2xx": non,
                           "cpu_s_per_10k": round(sum(split.values()), 2), "split": split}
                    print(json.dumps(row), flush=True)
                    results.append(row)
        (out / "results.json").write_text(json.dumps(results, indent=1))
    finally:
        for process in started:
            process.stop()


if __name__ == "__main__":
    main()
