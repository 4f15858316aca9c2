"""A fresh tenant ``data.db`` equal in schema to the one stock PocketBase 0.40.6 creates."""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import apsw
import orjson

from pbfast.pocketbase.collections import system as S
from pbfast.pocketbase.collections.defaults import SYSTEM_AUTH_FIELDS, default_auth_field
from pbfast.pocketbase.collections.model import now_text
from pbfast.pocketbase.collections.service import create_collection

__all__ = ["init_tenant_database"]

def init_tenant_database(data_dir: Path, *, with_auxiliary: bool = True) -> None:
    """Create ``data_dir/data.db`` (WAL) as stock PocketBase 0.40.6 creates a fresh data dir: bootstrap
    tables, the system collections and ``users`` (with fresh random token secrets), the settings row and
    the system migrations marked as applied. With ``with_auxiliary`` also ``auxiliary.db`` (the logs
    database PocketBase would otherwise create on its first start).

    Raises ``FileExistsError`` when ``data.db`` already exists.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "data.db"
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    conn = apsw.Connection(str(path))
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        with conn:
            for statement in S.BOOTSTRAP_DDL:
                conn.execute(statement)
            for payload in S.SYSTEM_COLLECTION_PAYLOADS:
                create_collection(conn, _system_payload(payload))
            now = now_text()
            conn.execute("INSERT INTO _params (id, value, created, updated) VALUES ('settings', ?, ?, ?)",
                         (orjson.dumps(S.DEFAULT_SETTINGS), now, now))
            applied = time.time_ns() // 1000
            for offset, name in enumerate(S.SYSTEM_MIGRATIONS):
                conn.execute("INSERT INTO _migrations (file, applied) VALUES (?, ?)", (name, applied + offset))
        conn.execute("PRAGMA optimize")
    except apsw.Error as err:
        conn.close()
        path.unlink(missing_ok=True)
        raise RuntimeError(f"cannot initialise {path}: {err}") from err
    conn.close()
    if with_auxiliary and not (data_dir / "auxiliary.db").exists():
        aux = apsw.Connection(str(data_dir / "auxiliary.db"))
        try:
            aux.execute("PRAGMA journal_mode = WAL")
            with aux:
                for statement in S.AUXILIARY_DDL:
                    aux.execute(statement)
        finally:
            aux.close()


def _system_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A system collection payload with the auth fields in PocketBase's order (they precede the custom
    fields when PocketBase builds these collections itself)."""
    result = copy.deepcopy(dict(payload))
    if result.get("type") == "auth":
        given = {f["name"]: f for f in result.get("fields", [])}
        ordered = [given.pop(name, None) or default_auth_field(name).to_json() for name in SYSTEM_AUTH_FIELDS]
        result["fields"] = ordered + [f for f in result.get("fields", []) if f["name"] in given]
    return result
