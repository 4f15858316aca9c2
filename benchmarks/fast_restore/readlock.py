"""Does Litestream still hold its read lock on the WAL index after a /sync over its control socket?
Lists the POSIX locks the litestream process holds on the database's -shm file (/proc/locks): byte 124
(SQLite's WAL_READ_LOCK(1)) is its long-running read transaction; 128 is the WAL index's DMS lock."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import apsw
import httpx

ROOT = Path(os.environ.get("READLOCK_ROOT", "/tmp/pbfast-readlock"))


def shm_locks(pid: int, shm: Path) -> list[str]:
    inode = os.stat(shm).st_ino
    locks = []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()  # "1: POSIX  ADVISORY  READ 1234 08:01:5678 124 124"
        if len(fields) >= 8 and fields[1] == "POSIX" and int(fields[4]) == pid \
                and int(fields[5].split(":")[2]) == inode:
            locks.append(f"{fields[3]} {fields[6]}")
    return sorted(locks)


def case(name: str, first_sync_delay: float, big_write: bool = False) -> None:
    directory = ROOT / name
    directory.mkdir(parents=True)
    db = directory / "data.db"
    connection = apsw.Connection(str(db))
    connection.execute("PRAGMA journal_mode=WAL").fetchall()
    connection.execute("CREATE TABLE t(x)")
    sock = directory / "control.sock"
    (directory / "litestream.yml").write_text(f"socket:\n  enabled: true\n  path: {sock}\ndbs: []\n")
    with open(directory / "litestream.log", "wb") as log:
        litestream = subprocess.Popen(["litestream", "replicate", "-config", str(directory / "litestream.yml")],
                                      stdout=log, stderr=subprocess.STDOUT)
    try:
        while not sock.exists():
            time.sleep(0.01)
        client = httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://litestream", timeout=30)
        client.post("/register", json={"path": str(db), "replica_url": (directory / "replica").as_uri()}
                    ).raise_for_status()
        time.sleep(first_sync_delay)
        shm = Path(f"{db}-shm")
        if big_write:  # > 1000 WAL pages: the next sync checkpoints (min-checkpoint-page-count)
            print(f"{name}: before the write: {shm_locks(litestream.pid, shm)}")
            connection.execute("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 1100) "
                               "INSERT INTO t SELECT randomblob(4000) FROM s")
        client.post("/sync", json={"path": str(db), "wait": True, "timeout": 10}).raise_for_status()
        time.sleep(0.3)
        print(f"{name}: after the /sync answered: {shm_locks(litestream.pid, shm)}")
        time.sleep(1.5)
        print(f"{name}: 1.5 s later (litestream's own syncs ran): {shm_locks(litestream.pid, shm)}")
    finally:
        litestream.kill()
        litestream.wait()


shutil.rmtree(ROOT, ignore_errors=True)
case("first-sync-by-monitor", 1.5)  # litestream's loop opens the database: read lock held
case("first-sync-by-socket", 0.0)  # the /sync request opens it: the read lock ends with the request
case("checkpoint-in-sync", 1.5, big_write=True)  # the /sync's checkpoint takes the read lock again: the same
