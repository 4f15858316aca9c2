"""A tenant's PocketBase API: pbfast tenant node (direct) vs stock ``pocketbase serve`` 0.40.6, side by side.

Same data in both (10,000 records with text, number, bool and autodate fields, public rules; and for expand,
2,000 posts whose ``author`` relation points at 100 authors, each with an ``org``), same machine, same run, wrk
over loopback: view by id, list (``perPage=20&sort=-created&filter=(num>=5000)``), create, and a list with a
two-level expand (``perPage=20&sort=-created&expand=author.org``, issue 15).

``PBFAST_BENCH_FULL=1 python -m pytest benchmarks/test_tenant_api_bench.py -s -p no:cacheprovider``

``PBFAST_BENCH_WORKERS=1,2`` measures a node per worker count (``--workers``) side by side, same run.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import apsw
import httpx
from bench_tools import headers_script, needs_tools, node_direct_tenant, start_pocketbase

from cpcluster import Start
from test_control_plane_bench import run_wrk

FULL = os.environ.get("PBFAST_BENCH_FULL") == "1"
WORKER_COUNTS = [int(count) for count in os.environ.get("PBFAST_BENCH_WORKERS", "1").split(",")]
RECORDS = 10_000
COLLECTION = {
    "name": "bench", "type": "base", "listRule": "", "viewRule": "", "createRule": "",
    "fields": [{"name": "title", "type": "text"}, {"name": "num", "type": "number"}, {"name": "flag", "type": "bool"},
               {"name": "created", "type": "autodate", "onCreate": True},
               {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True}],
    "indexes": ["CREATE INDEX idx_bench_created ON bench (created)"],
}
POSTS, AUTHORS, ORGS = 2_000, 100, 10
EXPAND_PATH = "/api/collections/posts/records?perPage=20&sort=-created&expand=author.org"


def _seed(db: Path) -> str:
    """Insert the same 10,000 rows (deterministic) directly into a data.db; returns one record id."""
    rng = random.Random(42)
    connection = apsw.Connection(str(db))
    connection.setbusytimeout(10_000)
    rows = []
    for i in range(RECORDS):
        record_id = f"{i:015d}"
        stamp = f"2025-01-01 00:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z"
        rows.append((record_id, f"title {rng.random():.6f}", float(i), i % 2, stamp, stamp))
    with connection:
        connection.executemany("INSERT INTO bench (id, title, num, flag, created, updated) VALUES (?,?,?,?,?,?)",
                               rows)
    connection.close()
    return rows[RECORDS // 2][0]


def _create_collection(base: str, token: str) -> None:
    response = httpx.post(f"{base}/api/collections", json=COLLECTION, headers={"Authorization": token}, timeout=30)
    assert response.status_code == 200, response.text


def _create_expand_collections(base: str, headers: dict[str, str]) -> None:
    """orgs <- authors.org <- posts.author, public (the expand case)."""
    open_rules = {"type": "base", "listRule": "", "viewRule": ""}
    target = ""
    for name, fields in (("orgs", []), ("authors", [("org", 1)]), ("posts", [("author", 1)])):
        relations = [{"name": field, "type": "relation", "collectionId": target, "maxSelect": most}
                     for field, most in fields]
        body = {"name": name, **open_rules, "fields": [{"name": "name", "type": "text"}, *relations,
                                                        {"name": "created", "type": "autodate", "onCreate": True}]}
        if name == "posts":
            body["indexes"] = ["CREATE INDEX idx_posts_created ON posts (created)"]
        response = httpx.post(f"{base}/api/collections", json=body, headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        target = response.json()["id"]


def _seed_expand(db: Path) -> None:
    connection = apsw.Connection(str(db))
    connection.setbusytimeout(10_000)
    stamp = "2025-01-01 00:00:00.000Z"
    with connection:
        connection.executemany("INSERT INTO orgs (id, name, created) VALUES (?, ?, ?)",
                               ((f"org{i:012d}", f"org {i}", stamp) for i in range(ORGS)))
        connection.executemany("INSERT INTO authors (id, name, org, created) VALUES (?, ?, ?, ?)",
                               ((f"author{i:09d}", f"author {i}", f"org{i % ORGS:012d}", stamp)
                                for i in range(AUTHORS)))
        connection.executemany("INSERT INTO posts (id, name, author, created) VALUES (?, ?, ?, ?)",
                               ((f"post{i:011d}", f"post {i}", f"author{i % AUTHORS:09d}",
                                 f"2025-01-01 00:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z")
                                for i in range(POSTS)))
    connection.close()


def _lua_create(path: Path) -> Path:
    path.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                    'wrk.body = \'{"title":"created by wrk","num":7,"flag":true}\'\n')
    return path


@needs_tools("wrk", "pocketbase")
def test_pbfast_vs_pocketbase(pbfast_process: Start, tmp_path: Path) -> None:
    stock = start_pocketbase(tmp_path / "stock" / "pb_data")
    try:
        _create_collection(stock.url, stock.token)
        _create_expand_collections(stock.url, {"Authorization": stock.token})
        pb_record = _seed(stock.data_dir / "data.db")
        _seed_expand(stock.data_dir / "data.db")
        expanded = httpx.get(stock.url + EXPAND_PATH).json()
        assert expanded["items"][0]["expand"]["author"]["expand"]["org"]["collectionName"] == "orgs"

        seconds = 10 if FULL else 2
        create_pb = _lua_create(tmp_path / "create_pb.lua")
        # pbfast: per worker count, a control plane and one tenant node; the benchmark talks to the node
        # directly, as a gateway does (cluster token + route epoch).
        nodes = {workers: _pbfast_tenant(pbfast_process, tmp_path / f"workers{workers}", workers, pb_record,
                                         create_pb, expanded) for workers in WORKER_COUNTS}
        cases = {
            "view by id": (f"/api/collections/bench/records/{pb_record}", None, 0),
            "list perPage=20 sort=-created filter num>=5000":
                ("/api/collections/bench/records?perPage=20&sort=-created&filter=(num%3E%3D5000)", None, 0),
            "create": ("/api/collections/bench/records", create_pb, 1),
            "list perPage=20 sort=-created expand=author.org": (EXPAND_PATH, None, 0),
        }
        results = []
        for name, (path, pb_script, script_index) in cases.items():
            pb_rate, pb_latency, pb_errors = run_wrk(stock.url + path, pb_script, 32, seconds)
            assert pb_errors == 0
            line = f"\n[bench] {name}: pocketbase {pb_rate:,.0f} req/s ({pb_latency})"
            for workers, (tenant_url, scripts) in nodes.items():
                fast_rate, fast_latency, fast_errors = run_wrk(tenant_url + path, scripts[script_index], 32, seconds)
                assert fast_errors == 0
                ratio = fast_rate / pb_rate
                results.append((name, pb_rate, pb_latency, fast_rate, fast_latency, ratio))
                line += (f" | pbfast --workers={workers} {fast_rate:,.0f} req/s ({fast_latency}) "
                         f"= {ratio:.2f}x pocketbase")
            print(line)
        assert all(r[3] > 0 for r in results)
    finally:
        stock.stop()


def _pbfast_tenant(start: Start, directory: Path, workers: int, record: str, create_script: Path,
                   expanded: dict[str, object]) -> tuple[str, tuple[Path, Path]]:
    """A control plane and a tenant node with ``workers`` worker processes, its tenant seeded like PocketBase's
    (its expand list answered as ``expanded``); the tenant's URL on the node and the wrk scripts (read,
    create) with the forwarding headers."""
    tenant = node_direct_tenant(start, directory, (f"--workers={workers}",))
    _create_collection_with_headers(tenant.url, tenant.token, tenant.forward)
    _create_expand_collections(tenant.url, {"Authorization": tenant.token, **tenant.forward})
    assert _seed(tenant.data_db) == record
    _seed_expand(tenant.data_db)
    assert httpx.get(tenant.url + EXPAND_PATH, headers=tenant.forward).json() == expanded
    header_lua = headers_script(directory / "headers.lua", tenant.forward)
    create_fast = headers_script(directory / "create_fast.lua", tenant.forward, then=create_script)
    return tenant.url, (header_lua, create_fast)


def _create_collection_with_headers(base: str, token: str, headers: dict[str, str]) -> None:
    response = httpx.post(f"{base}/api/collections", json=COLLECTION, headers={"Authorization": token, **headers},
                          timeout=30)
    assert response.status_code == 200, response.text
