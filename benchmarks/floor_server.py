"""The floor for a tenant node's CPU per request (issue 14): the bench collection's view, list and create
answered by the least a Python server can do, granian (embedded, RSGI, uvloop, as pbfast runs it) + apsw +
orjson, the SQL run inline on the event loop. No routing table, rules, auth, validation or tenants: what is
left is the HTTP server, the SQLite statements and the JSON, the part pbfast cannot avoid.

Usage: python benchmarks/floor_server.py DATA_DB PORT   (the database holds the ``bench`` table:
:func:`create_floor_database`)
"""

from __future__ import annotations

import asyncio
import datetime
import secrets
import signal
import string
import sys
from pathlib import Path
from typing import Any

import apsw
import orjson
import uvloop
from granian.constants import Interfaces
from granian.server.embed import Server

COLLECTION_ID = "pbc_floor00000001"
PREFIX = "/api/collections/bench/records"
COLUMNS = "id, title, num, flag, created, updated"
HEADERS = [("content-type", "application/json")]
ALPHABET = string.ascii_lowercase + string.digits


def create_floor_database(path: Path) -> None:
    """An empty ``bench`` table shaped like the one PocketBase creates for the benchmark's collection."""
    connection = apsw.Connection(str(path))
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("CREATE TABLE bench (id TEXT PRIMARY KEY NOT NULL, title TEXT DEFAULT '' NOT NULL, "
                       "num NUMERIC DEFAULT 0 NOT NULL, flag BOOLEAN DEFAULT FALSE NOT NULL, "
                       "created TEXT DEFAULT '' NOT NULL, updated TEXT DEFAULT '' NOT NULL)")
    connection.execute("CREATE INDEX idx_bench_created ON bench (created)")
    connection.close()


def _record(row: tuple[Any, ...]) -> dict[str, Any]:
    return {"collectionId": COLLECTION_ID, "collectionName": "bench", "created": row[4], "flag": bool(row[3]),
            "id": row[0], "num": row[2], "title": row[1], "updated": row[5]}


class FloorApp:
    def __init__(self, db: Path) -> None:
        self.conn = apsw.Connection(str(db), statementcachesize=256)
        for pragma in ("journal_mode = WAL", "synchronous = NORMAL", "cache_size = -16000"):
            self.conn.execute(f"PRAGMA {pragma}")

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        path = scope.path
        if scope.method == "POST" and path == PREFIX:
            body = orjson.loads(await proto())
            now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"
            row = ("".join(secrets.choice(ALPHABET) for _ in range(15)), str(body.get("title", "")),
                   float(body.get("num", 0)), bool(body.get("flag")), now, now)
            with self.conn:
                self.conn.execute(f"INSERT INTO bench ({COLUMNS}) VALUES (?,?,?,?,?,?)", row)
            proto.response_bytes(200, HEADERS, orjson.dumps(_record(row)))
        elif path == PREFIX:  # the benchmark's one list: filter=(num>=5000), sort=-created, perPage=20
            rows = self.conn.execute(f"SELECT {COLUMNS} FROM bench WHERE num >= ? ORDER BY created DESC "
                                     "LIMIT 20 OFFSET 0", (5000,)).fetchall()
            total = self.conn.execute("SELECT COUNT(*) FROM bench WHERE num >= ?", (5000,)).fetchone()[0]
            proto.response_bytes(200, HEADERS, orjson.dumps({
                "items": [_record(row) for row in rows], "page": 1, "perPage": 20, "totalItems": total,
                "totalPages": (total + 19) // 20}))
        else:
            row = self.conn.execute(f"SELECT {COLUMNS} FROM bench WHERE id = ?", (path.rsplit("/", 1)[-1],)).fetchone()
            if row is None:
                proto.response_bytes(404, HEADERS, b'{"status":404,"message":"Not found.","data":{}}')
            else:
                proto.response_bytes(200, HEADERS, orjson.dumps(_record(row)))


async def main(db: Path, port: int) -> None:
    server = Server(FloorApp(db), address="127.0.0.1", port=port, interface=Interfaces.RSGI, log_enabled=False,
                    websockets=False, backlog=2048)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, server.stop)
    await server.serve()


if __name__ == "__main__":
    uvloop.run(main(Path(sys.argv[1]), int(sys.argv[2])))
