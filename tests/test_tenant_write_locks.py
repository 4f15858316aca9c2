"""A tenant's writes wait their turn behind another writer of the same database (Litestream writes to it too,
and so do a node's other processes) instead of failing with "database is locked"."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import apsw
import bcrypt

from pbfast.pocketbase.tenant import DATA_DB, Tenant
from pbfast.tenant_node.superusers import upsert_superuser


def test_a_superuser_upsert_waits_for_another_writer(tmp_path: Path) -> None:
    tenant = Tenant.open("alpha", tmp_path / "alpha", create=True)
    password_hash = bcrypt.hashpw(b"a-long-password-1", bcrypt.gensalt(4)).decode()
    upsert_superuser(tenant, "root@alpha.test", password_hash)
    other = apsw.Connection(str(tmp_path / "alpha" / DATA_DB))
    other.setbusytimeout(5000)
    holding = threading.Event()

    def write_meanwhile() -> None:  # as Litestream does: its own connection, its own table
        other.execute("BEGIN IMMEDIATE")
        other.execute("CREATE TABLE IF NOT EXISTS _other_writer (n INTEGER)")
        other.execute("INSERT INTO _other_writer VALUES (1)")
        holding.set()
        time.sleep(0.3)
        other.execute("COMMIT")

    writer = threading.Thread(target=write_meanwhile)
    writer.start()
    try:
        assert holding.wait(5)
        # Reads the superuser while the other transaction is open, then updates it once that one committed.
        upsert_superuser(tenant, "root@alpha.test", password_hash)
    finally:
        writer.join()
        other.close()
    row = tenant.conn.execute("SELECT count(*) FROM _superusers WHERE email = 'root@alpha.test'").fetchone()
    assert row == (1,)
    tenant.close()
