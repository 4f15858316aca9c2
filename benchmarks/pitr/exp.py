#!/usr/bin/env python3
"""Retention / point-in-time-restore experiment for litestream 0.5.17 with runtime-registered dbs.

Starts (optionally) a moto S3 server with request logging, one `litestream replicate` with the given
top-level config body (socket added), registers a busy db (insert + waited /sync every --period s) and an
idle db (one write at start), runs for --duration s, then
  * counts S3 requests per db and kind (PUT/GET/HEAD/LIST/DELETE) from moto's access log,
  * counts objects per level,
  * restores each db with `litestream restore -timestamp T` for --restores random T and checks exactness:
      every row whose waited /sync returned before T present (else "missing"), no row committed at/after T
      ("extra"); reports the worst lag = T - commit time of the newest missing row.
Writes a JSON summary to <workdir>/summary.json.

usage: exp.py --name NAME --config FILE.yml --duration 180 [--s3] [--period 0.2] [--restores 20]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import datetime, UTC
from pathlib import Path

import httpx

ROOT = Path(os.environ.get("PITR_RUNS", "/tmp/pbfast-pitr-runs"))
BUCKET = "bkt"
ENV = {**{k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}, "AWS_ACCESS_KEY_ID": "testing",
       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def start_moto(work: Path) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    log = work / "moto.log"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)], stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    import boto3
    for _ in range(100):
        try:
            boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                         aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
            break
        except Exception:
            time.sleep(0.1)
    return proc, endpoint, log


REQ = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP')


def count_requests(log: Path) -> dict:
    """moto/werkzeug access log -> {db: Counter(kind)}."""
    out: dict[str, Counter] = defaultdict(Counter)
    for line in log.read_text(errors="replace").splitlines():
        m = REQ.search(line)
        if not m:
            continue
        method, target = m.groups()
        from urllib.parse import urlsplit, parse_qs, unquote
        u = urlsplit(target)
        q = parse_qs(u.query, keep_blank_values=True)
        if method == "GET" and "list-type" in q:
            kind, where = "LIST", unquote(q.get("prefix", [""])[0])
        elif method == "POST" and "delete" in q:
            kind, where = "DELETE(batch)", ""
        else:
            kind, where = method, unquote(u.path)
        mdb = re.search(r"(?:^|/)(busy|idle)/", where)
        db = mdb.group(1) if mdb else "other"
        lvl = re.search(r"/(\d{4})/", where)
        out[db][kind] += 1
        if lvl:
            out[db][f"{kind} L{int(lvl.group(1), 16)}"] += 1
    return {k: dict(v) for k, v in out.items()}


def count_objects(url_root: str, endpoint: str | None, local_root: Path | None) -> dict:
    res: dict[str, Counter] = defaultdict(Counter)
    if endpoint:
        import boto3
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for o in page.get("Contents", []):
                k = o["Key"]
                db = k.split("/")[0]
                lvl = re.search(r"/(\d{4})/", k)
                res[db][f"L{int(lvl.group(1), 16)}" if lvl else "other"] += 1
    else:
        for f in local_root.rglob("*.ltx"):
            db = f.relative_to(local_root).parts[0]
            res[db][f"L{int(f.parent.name, 16)}"] += 1
    return {k: dict(sorted(v.items())) for k, v in res.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--config", required=True, help="file with the top-level yaml body (no socket/dbs)")
    ap.add_argument("--duration", type=float, default=180)
    ap.add_argument("--period", type=float, default=0.2)
    ap.add_argument("--s3", action="store_true")
    ap.add_argument("--restores", type=int, default=20)
    ap.add_argument("--restore-from", type=float, default=None, help="restore T only in the last N seconds")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()

    work = ROOT / a.name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    moto = None
    endpoint = None
    if a.s3:
        moto, endpoint, motolog = start_moto(work)
    local_root = work / "replica"

    def url(db: str) -> str:
        if endpoint:
            return f"s3://{BUCKET}/{db}?endpoint={endpoint}&forcePathStyle=true&region=us-east-1"
        return (local_root / db).as_uri()

    sock = work / "ctl.sock"
    cfg = work / "litestream.yml"
    cfg.write_text(f"socket:\n  enabled: true\n  path: {sock}\n  permissions: 0600\n"
                   + Path(a.config).read_text() + "dbs: []\n")
    ls = subprocess.Popen(["litestream", "replicate", "-config", str(cfg), "-log-level", "debug"],
                          stdout=open(work / "litestream.log", "wb"), stderr=subprocess.STDOUT, env=ENV)
    while not sock.exists():
        time.sleep(0.05)
    client = httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://ls", timeout=60)

    dbs = {}
    for name in ("busy", "idle"):
        p = work / f"{name}.db"
        c = sqlite3.connect(p, isolation_level=None)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, committed REAL, pad BLOB)")
        c.execute("INSERT INTO t VALUES(0, ?, randomblob(100))", (time.time(),))
        dbs[name] = c
        r = client.post("/register", json={"path": str(p), "replica_url": url(name)})
        r.raise_for_status()
        client.post("/sync", json={"path": str(p), "wait": True}).raise_for_status()

    rows = []  # (id, commit_time, sync_return_time, replicated_txid)
    t0 = time.time()
    i = 0
    next_t = t0
    busy = dbs["busy"]
    while time.time() - t0 < a.duration:
        i += 1
        tc = time.time()
        busy.execute("INSERT INTO t VALUES(?, ?, randomblob(100))", (i, tc))
        r = client.post("/sync", json={"path": str(work / "busy.db"), "wait": True})
        ts = time.time()
        j = r.json()
        rows.append((i, tc, ts, j.get("replicated_txid"), j.get("status")))
        next_t += a.period
        d = next_t - time.time()
        if d > 0:
            time.sleep(d)
    t_end = time.time()
    # let compaction/retention settle a little so the picture is steady state
    time.sleep(2)
    reqs = count_requests(motolog) if moto else None
    objs = count_objects("", endpoint, local_root)
    (work / "rows.json").write_text(json.dumps(rows))

    # restores
    lo = t0 if a.restore_from is None else max(t0, t_end - a.restore_from)
    results = []
    rnd = random.Random(1)
    for k in range(a.restores):
        T = rnd.uniform(lo, t_end)
        out = work / f"r{k}.db"
        st = time.time()
        p = subprocess.run(["litestream", "restore", "-timestamp", rfc3339(T), "-o", str(out), url("busy")],
                           capture_output=True, text=True, env=ENV)
        dt = time.time() - st
        if p.returncode != 0:
            results.append({"T_age_s": round(t_end - T, 2), "ok": False, "err": p.stderr.strip()[-200:],
                            "secs": round(dt, 2)})
            continue
        got = {r[0] for r in sqlite3.connect(out).execute("SELECT id FROM t")}
        must = {r[0] for r in rows if r[2] < T}
        may = {r[0] for r in rows if r[1] < T}
        missing = sorted(must - got)
        extra = sorted(got - may - {0})
        lag = max((T - rows[m - 1][1] for m in missing), default=0.0)
        results.append({"T_age_s": round(t_end - T, 2), "ok": True, "missing": len(missing), "extra": len(extra),
                        "max_missing_lag_s": round(lag, 3), "secs": round(dt, 2)})
        out.unlink()
    client.close()
    ls.terminate()
    ls.wait()
    if moto:
        moto.terminate()
    summary = {"name": a.name, "s3": a.s3, "duration_s": round(t_end - t0, 1), "writes": len(rows),
               "requests": reqs, "objects": objs, "restores": results,
               "exact_restores": sum(1 for r in results if r["ok"] and r["missing"] == 0 and r["extra"] == 0),
               "config": Path(a.config).read_text()}
    (work / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
