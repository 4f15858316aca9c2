"""What group commit saves in SQLite alone (issue 14): N creates of the tenant API benchmark's ``bench`` collection
(its table, its id index and its ``created`` index, 10,000 rows already), one transaction per create as a lone
create commits, against K creates per transaction as a group commits them; CPU per create (process time: SQLite
and the kernel's share of its WAL writes) and WAL bytes per create (what SQLite writes and Litestream then reads
and ships). Tenant settings: WAL, ``synchronous=NORMAL``, no autocheckpoint (Litestream checkpoints).

    python3 benchmarks/group_commit_micro.py 1 4 8 16
"""

from __future__ import annotations

import random
import shutil
import string
import sys
import tempfile
import time
from pathlib import Path

import apsw

CREATES = 6000
FRAME = 4096 + 24  # a WAL frame: its page and its header
INSERT = ('INSERT INTO bench ("id","title","num","flag","created","updated") VALUES (?,?,?,?,?,?) '
          'RETURNING "id","title","num","flag","created","updated"')
NOW = "2026-12-08 01:00:00.000Z"


def _database(path: Path) -> apsw.Connection:
    conn = apsw.Connection(str(path))
    for pragma in ("journal_mode = WAL", "synchronous = NORMAL", "wal_autocheckpoint = 0"):
        conn.execute("PRAGMA " + pragma)
    conn.execute("CREATE TABLE bench (id TEXT PRIMARY KEY DEFAULT ('r'||lower(hex(randomblob(7)))) NOT NULL, "
                 "title TEXT DEFAULT '' NOT NULL, num NUMERIC DEFAULT 0 NOT NULL, flag BOOLEAN DEFAULT FALSE NOT NULL, "
                 "created TEXT DEFAULT '' NOT NULL, updated TEXT DEFAULT '' NOT NULL)")
    conn.execute("CREATE INDEX idx_bench_created ON bench (created)")
    with conn:
        conn.executemany("INSERT INTO bench VALUES (?,?,?,?,?,?)",
                         [(f"{i:015d}", "t", i, 1, "2024-01-01 00:00:00.000Z", "") for i in range(10_000)])
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return conn


def measure(per_transaction: int) -> tuple[float, float]:
    """(CPU us per create, WAL frames per create) with ``per_transaction`` creates per transaction."""
    directory = Path(tempfile.mkdtemp(prefix="group-commit-"))
    try:
        conn = _database(directory / "data.db")
        ids = ["".join(random.choices(string.ascii_lowercase + string.digits, k=15)) for _ in range(CREATES)]
        wal = directory / "data.db-wal"
        started, wal_before = time.process_time(), wal.stat().st_size
        for start in range(0, CREATES, per_transaction):
            if per_transaction > 1:
                conn.execute("BEGIN IMMEDIATE")
            for record_id in ids[start:start + per_transaction]:
                conn.execute(INSERT, (record_id, "x", 7, 1, NOW, NOW)).fetchall()
            if per_transaction > 1:
                conn.execute("COMMIT")
        cpu = time.process_time() - started
        frames = (wal.stat().st_size - wal_before) / FRAME
        conn.close()
        return cpu / CREATES * 1e6, frames / CREATES
    finally:
        shutil.rmtree(directory)


def main() -> None:
    for per_transaction in [int(arg) for arg in sys.argv[1:]] or [1, 4, 8, 16]:
        cpu, frames = measure(per_transaction)
        print(f"{per_transaction:3d} creates per transaction: {cpu:5.1f} us CPU, {frames:.2f} WAL frames per create")


if __name__ == "__main__":
    main()
