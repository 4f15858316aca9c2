"""What a tenant keeps of its auth records (:mod:`pbfast.pocketbase.auth_records`), in process: the WAL index it
judges them by is mapped once and let go with the tenant's connection, and another connection's commit ends a
verified token at once (the mapping sees it without a SQLite call)."""

from __future__ import annotations

import os
from pathlib import Path

import apsw

from pbfast.pocketbase import auth, auth_records, records
from pbfast.pocketbase.apis.request import authenticate
from pbfast.pocketbase.tenant import Tenant


def _open(path: Path) -> int:
    """How many of this process's descriptors are open on ``path``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
        except OSError:
            pass
    return count


def test_the_wal_index_is_judged_in_memory_and_let_go_with_the_connection(tmp_path: Path) -> None:
    tenant = Tenant.open("kept", tmp_path / "kept", create=True)
    users = tenant.collection("users")
    assert users is not None
    row = records.save_record(tenant, users, {"email": "kept@example.com", "password": "a-password-of-length",
                                               "passwordConfirm": "a-password-of-length"}, None, manage=True,
                              superuser=True)
    config = users.auth.auth_token
    token = auth.issue_auth_token(row["id"], str(row["tokenKey"]), users.id, config.secret, config.duration)
    shm = tmp_path / "kept" / "data.db-shm"
    before = _open(shm)  # SQLite's own
    first = authenticate(tenant, token)
    assert first is not None and first.record["id"] == row["id"]
    kept = auth_records._BY_TENANT[tenant]
    assert kept.wal_index is not None and token in kept.tokens  # mapped, and the token verified once
    assert authenticate(tenant, "Bearer " + token) is not None

    other = apsw.Connection(str(tmp_path / "kept" / "data.db"))  # another process's commit renews the tokenKey
    try:
        other.setbusytimeout(5_000)
        other.execute("UPDATE users SET tokenKey = ? WHERE id = ?", ("renewed-elsewhere-" + "k" * 32, row["id"]))
    finally:
        other.close()
    assert authenticate(tenant, token) is None
    assert _open(shm) == before + 1  # the mapping's descriptor
    tenant.close()
    assert kept.wal_index is None
    assert _open(shm) == 0  # the mapping's and the connection's descriptors are gone
