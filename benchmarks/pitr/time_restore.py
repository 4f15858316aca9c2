#!/usr/bin/env python3
"""Restore timing with many L0 files: file replica and the same objects uploaded to moto (S3).

usage: time_restore.py RUN_DIR   (a run of exp.py, e.g. runs/bulk, whose busy replica has many L0 files)
For each layout (as replicated: L0+L1+L2...; and "L0 only": compacted levels removed, the worst case in
which a restore must read every L0 file) and each mode (latest, -timestamp T near the end / mid-run, -txid),
reports wall time and, on S3, the requests made (from moto's access log).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, UTC
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from exp import ENV, BUCKET, start_moto, count_requests, rfc3339  # noqa: E402

run = Path(sys.argv[1])
rows = json.loads((run / "rows.json").read_text())
src = run / "replica" / "busy"
t_end = rows[-1][2]
t_mid = rows[len(rows) // 2][2] + 0.0001
txid_mid = rows[len(rows) // 2][3]
out_root = Path(os.environ.get("PITR_RUNS", "/tmp/pbfast-pitr-runs")) / "timing"
shutil.rmtree(out_root, ignore_errors=True)
out_root.mkdir(parents=True)

layouts = {"replicated": src}
l0only = out_root / "l0only"
shutil.copytree(src / "ltx" / "0", l0only / "ltx" / "0", copy_function=shutil.copy2)
layouts["l0only"] = l0only
counts = {name: {p.name: len(list(p.iterdir())) for p in (d / "ltx").iterdir()} for name, d in layouts.items()}
print("files per level:", counts)

modes = {
    "latest": [],
    "timestamp_end": ["-timestamp", rfc3339(t_end - 1)],
    "timestamp_mid": ["-timestamp", rfc3339(t_mid)],
    "txid_mid": ["-txid", f"{txid_mid:016x}"],
}


def restore(url: str, args: list[str], tag: str) -> tuple[float, str]:
    out = out_root / f"{tag}.db"
    st = time.time()
    p = subprocess.run(["litestream", "restore", *args, "-o", str(out), url], capture_output=True, text=True,
                       env=ENV)
    dt = time.time() - st
    res = "ok" if p.returncode == 0 else "ERR " + p.stderr.strip()[-150:]
    if p.returncode == 0:
        import sqlite3
        res += f" rows={sqlite3.connect(out).execute('select count(*) from t').fetchone()[0]}"
        out.unlink()
    return dt, res


results = []
for name, d in layouts.items():
    for mode, args in modes.items():
        dt, res = restore(d.as_uri(), args, f"f_{name}_{mode}")
        results.append({"store": "file", "layout": name, "mode": mode, "secs": round(dt, 2), "result": res})
        print(results[-1], flush=True)

moto, endpoint, motolog = start_moto(out_root)
import boto3  # noqa: E402
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                  aws_secret_access_key="testing")


def up(args):
    key, f = args
    ts = datetime.fromtimestamp(f.stat().st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    s3.put_object(Bucket=BUCKET, Key=key, Body=f.read_bytes(), Metadata={"litestream-timestamp": ts})


for name, d in layouts.items():
    jobs = [(f"{name}/{int(lvl.name):04x}/{f.name}", f) for lvl in (d / "ltx").iterdir() for f in lvl.iterdir()]
    with ThreadPoolExecutor(32) as ex:
        list(ex.map(up, jobs))
print("uploaded", flush=True)

for name in layouts:
    for mode, args in modes.items():
        before = motolog.read_text(errors="replace")
        n0 = len(before.splitlines())
        url = f"s3://{BUCKET}/{name}?endpoint={endpoint}&forcePathStyle=true&region=us-east-1"
        dt, res = restore(url, args, f"s_{name}_{mode}")
        time.sleep(0.5)
        lines = motolog.read_text(errors="replace").splitlines()[n0:]
        tmp = out_root / "slice.log"
        tmp.write_text("\n".join(lines))
        req = count_requests(tmp).get("other", {})
        req = {k: v for k, v in req.items() if " L" not in k}
        results.append({"store": "s3(moto)", "layout": name, "mode": mode, "secs": round(dt, 2), "result": res,
                        "requests": req})
        print(results[-1], flush=True)
moto.terminate()
(out_root / "timing.json").write_text(json.dumps({"files": counts, "results": results}, indent=1))
