"""A tenant's superusers as the node sets them: the first one, given at the tenant's creation, and those the
control plane upserts (passwords arrive bcrypt-hashed)."""

from __future__ import annotations

import time

from pbfast.pocketbase.auth import new_token_key
from pbfast.pocketbase.dbutils.transaction import write_transaction
from pbfast.pocketbase.tenant import Tenant, new_record_id
from pbfast.timefmt import format_datetime

__all__ = ["NODE_WRITE_SECONDS", "upsert_superuser"]

# The node's own writes to a tenant's database run under the tenant's guards and a time limit: the tenant's
# triggers (on _superusers, say) fire for them too, and are the tenant's code.
NODE_WRITE_SECONDS = 5.0


def upsert_superuser(tenant: Tenant, email: str, password_hash: str, overwrite: bool = True) -> None:
    """Create (or, with ``overwrite``, update) the superuser ``email`` with an already bcrypt-hashed password
    (blocking: the tenant's database work, run on the node's database threads). Raises
    :class:`~pbfast.pocketbase.sqlite_guard.TimeLimitExceeded` past :data:`NODE_WRITE_SECONDS`."""
    now = format_datetime(time.time())
    # The write lock first: Litestream writes to the database too, and a transaction that read before it
    # wrote would fail at once (SQLITE_BUSY_SNAPSHOT) instead of waiting its turn.
    with tenant.time_limit.running(NODE_WRITE_SECONDS), write_transaction(tenant.conn):
        row = tenant.conn.execute("SELECT id FROM _superusers WHERE email = ? COLLATE NOCASE", (email,)).fetchone()
        if row is None:
            tenant.conn.execute(
                "INSERT INTO _superusers (id, email, password, tokenKey, verified, emailVisibility, created, updated)"
                " VALUES (?, ?, ?, ?, 1, 0, ?, ?)", (new_record_id(), email, password_hash, new_token_key(), now, now))
        elif overwrite:
            tenant.conn.execute("UPDATE _superusers SET password = ?, tokenKey = ?, updated = ? WHERE id = ?",
                                (password_hash, new_token_key(), now, row[0]))
