"""What PocketBase's MFA and OTP cleanup jobs delete (``POST /api/crons/__pbMFACleanup__`` runs them; the
answers are compared with PocketBase's in ``scenarios_remaining_ports.py``): the sessions and one-time
passwords older than their auth collection's duration, of every auth collection, and nothing else (the backup
job run on demand: ``test_differential_go_ports.py``)."""

from __future__ import annotations

import time
from pathlib import Path

from pbharness import copy_fixture

from pbfast.pocketbase.apis.crons import delete_expired_mfas, delete_expired_otps
from pbfast.pocketbase.tenant import Tenant

USERS = "_pb_users_auth_"  # mfa.duration 1800 s, otp.duration 300 s in the fixture
CLIENTS = "v851q4r790rhknl"


def _ago(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S.000Z", time.gmtime(time.time() - seconds))


def test_cleanup_jobs_delete_only_what_expired(tmp_path: Path) -> None:
    tenant = Tenant.open("fixture", copy_fixture(tmp_path / "fixture"))
    try:
        durations = {c.id: (c.auth.mfa.duration, c.auth.otp.duration) for c in tenant.collections.values()
                     if c.type == "auth"}
        rows = {  # id -> (collection, age in seconds)
            "users_old": (USERS, durations[USERS][0] + 60), "users_new": (USERS, 10),
            "client_old": (CLIENTS, durations[CLIENTS][0] + 60), "client_new": (CLIENTS, 10)}
        for table, extra in (("_mfas", "method"), ("_otps", "password")):
            for row_id, (collection, age) in rows.items():
                if table == "_otps":  # the OTP durations are shorter: age by them
                    age = durations[collection][1] + 60 if row_id.endswith("old") else 10
                tenant.conn.execute(f"INSERT INTO {table} (id, collectionRef, recordRef, {extra}, created, updated) "
                                    "VALUES (?, ?, 'r', 'x', ?, ?)", (row_id, collection, _ago(age), _ago(age)))
        delete_expired_mfas(tenant)
        assert sorted(r[0] for r in tenant.conn.execute("SELECT id FROM _mfas")) == ["client_new", "users_new"]
        assert len(tenant.conn.execute("SELECT id FROM _otps").fetchall()) == 4  # the other job's rows
        delete_expired_otps(tenant)
        assert sorted(r[0] for r in tenant.conn.execute("SELECT id FROM _otps")) == ["client_new", "users_new"]
    finally:
        tenant.close()

