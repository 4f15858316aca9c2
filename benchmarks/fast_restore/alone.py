"""Litestream alone and a plain SQLite writer (writer.py), with pbfast's ingredients added one at a time;
each run: write for --seconds, kill -9 the writer (and Litestream at once, or 1.5 s later), restore the
latest state and, with --every N, the state at every Nth TXID (``litestream restore -txid``); integrity
check each. One JSON line per run. Figures: benchmarks/RESULTS.md ("Restores after full-speed writes")."""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import apsw
import httpx

ap = argparse.ArgumentParser()
ap.add_argument("--register", choices=["config", "socket"], default="config",
                help="database declared in the config file, or registered over the control socket as pbfast does")
ap.add_argument("--settings", choices=["default", "pbfast"], default="default",
                help="pbfast's retention/compaction settings (Replicator._write_config)")
ap.add_argument("--sync", type=float, default=0, help="a /sync every N s, as the node ships (0: none)")
ap.add_argument("--nowait", action="store_true", help="/sync without wait")
ap.add_argument("--monitor", default="", help="config-declared database: monitor-interval (e.g. 200ms)")
ap.add_argument("--pragmas", choices=["plain", "pbfast"], default="plain")
ap.add_argument("--autocheckpoint", type=int, default=-1, help="the writer's wal_autocheckpoint (-1: default 1000)")
ap.add_argument("--init", choices=["empty", "pocketbase"], default="empty",
                help="start from an empty database or a fresh PocketBase data.db")
ap.add_argument("--kill", choices=["staggered", "together"], default="staggered",
                help="Litestream killed 1.5 s after the writer, or with it (the node's child dies with it)")
ap.add_argument("--replica", choices=["file", "s3"], default="file")
ap.add_argument("--seconds", type=float, default=6)
ap.add_argument("--rate", type=float, default=0, help="writer inserts/s (0: as fast as it goes)")
ap.add_argument("--runs", type=int, default=1)
ap.add_argument("--every", type=int, default=0, help="also restore every Nth TXID")
ap.add_argument("--binary", default="litestream")
ap.add_argument("--log", default="", help="litestream log level (debug, trace)")
ap.add_argument("--root", default="/tmp/pbfast-fast-restore")
args = ap.parse_args()
HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check(path: Path) -> tuple[str, int]:
    connection = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        try:
            verdict = str(connection.execute("PRAGMA integrity_check").fetchall()[0][0])
        except apsw.Error as err:
            verdict = f"error: {err}"
        try:
            rows = int(connection.execute("SELECT count(*) FROM log").fetchone()[0])
        except apsw.Error:
            rows = 0
        return verdict.replace("\n", " ")[:80], rows
    finally:
        connection.close()


def run(index: int, endpoint: str | None) -> None:
    root = Path(args.root) / f"r{index}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    db = root / "data.db"
    if args.init == "pocketbase":
        from pbfast.pocketbase import collections  # noqa: PLC0415
        collections.init_tenant_database(root)
    else:
        connection = apsw.Connection(str(db))
        connection.execute("PRAGMA journal_mode=WAL").fetchall()
        connection.close()
    url = ((root / "replica").as_uri() if endpoint is None else
           f"s3://alone/r{index}-{time.time_ns()}?endpoint={endpoint}&forcePathStyle=true&region=us-east-1")
    sock = root / "ctl.sock"
    config = f"logging:\n  level: {args.log}\n" if args.log else ""
    if args.register == "socket":
        config += f"socket:\n  enabled: true\n  path: {sock}\n  permissions: 0600\n"
    if args.settings == "pbfast":
        config += ("l0-retention: 65m\nl0-retention-check-interval: 5m\nlevels:\n  - interval: 5m\n"
                   "  - interval: 1h\nsnapshot:\n  interval: 24h\n  retention: 192h\n")
    if args.register == "config":
        monitor = f"    monitor-interval: {args.monitor}\n" if args.monitor else ""
        config += f"dbs:\n  - path: {db}\n{monitor}    replica:\n      url: {url}\n"
    else:
        config += "dbs: []\n"
    (root / "litestream.yml").write_text(config)
    with open(root / "litestream.log", "wb") as log:
        litestream = subprocess.Popen([args.binary, "replicate", "-config", str(root / "litestream.yml")],
                                      stdout=log, stderr=subprocess.STDOUT, env=ENV, start_new_session=True)
    client = None
    if args.register == "socket":
        while not sock.exists():
            time.sleep(0.02)
        client = httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://litestream", timeout=40)
        client.post("/register", json={"path": str(db), "replica_url": url}).raise_for_status()
    else:
        time.sleep(0.5)
    writer = subprocess.Popen([sys.executable, str(HERE / "writer.py"), str(db), args.pragmas, str(args.rate),
                               str(args.autocheckpoint)])
    started, syncs = time.time(), 0
    while time.time() - started < args.seconds:
        if args.sync and client is not None:
            time.sleep(args.sync)
            try:
                client.post("/sync", json={"path": str(db), "wait": not args.nowait, "timeout": 10})
                syncs += 1
            except httpx.HTTPError:
                pass
        else:
            time.sleep(0.1)
    writer.kill()
    writer.wait()
    if args.kill == "staggered":
        time.sleep(1.5)
    litestream.kill()
    litestream.wait()
    _, written = check(db)
    result: dict[str, object] = {"run": index, "rows_written": written, "syncs": syncs}
    restored = subprocess.run([args.binary, "restore", "-o", str(root / "restored.db"), url], env=ENV,
                              capture_output=True, text=True)
    if restored.returncode != 0:
        result["restore"] = restored.stderr.strip()[-200:]
    else:
        verdict, rows = check(root / "restored.db")
        result.update(integrity=verdict, rows=rows, lost=written - rows)
    listing = subprocess.run([args.binary, "ltx", "-level", "0", url], env=ENV, capture_output=True,
                             text=True).stdout.splitlines()[1:]
    result["l0_files"] = len(listing)
    if args.every and listing:
        bad = []
        for txid in [int(line.split()[2], 16) for line in listing][::args.every]:
            target = root / f"txid-{txid}.db"
            done = subprocess.run([args.binary, "restore", "-txid", f"{txid:016x}", "-o", str(target), url],
                                  env=ENV, capture_output=True, text=True)
            if done.returncode != 0 or check(target)[0] != "ok":
                bad.append(txid)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{target}{suffix}").unlink(missing_ok=True)
        result.update(txids_checked=len(listing[::args.every]), bad_txids=len(bad), first_bad=bad[0] if bad else None)
    print(json.dumps(result), flush=True)


moto = None
endpoint = None
if args.replica == "s3":
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import boto3  # noqa: PLC0415

    for _ in range(100):
        try:
            boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                         aws_secret_access_key="testing").create_bucket(Bucket="alone")
            break
        except Exception:  # noqa: BLE001 - moto still starting
            time.sleep(0.1)
try:
    for index in range(args.runs):
        run(index, endpoint)
finally:
    if moto is not None:
        moto.kill()
        moto.wait()
