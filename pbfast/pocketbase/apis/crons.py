"""``/api/crons`` (PocketBase's ``apis/cron.go``), for superusers: the tenant's scheduled jobs as PocketBase
lists its built-in ones, and ``POST /api/crons/{id}`` to run one now (answered 204 at once, as PocketBase
fires the job and forgets it).

The jobs and what running one does here:
- ``__pbDBOptimize__``: ``PRAGMA optimize`` on the tenant's database (its WAL is checkpointed by the node's
  replication, not by the tenant);
- ``__pbMFACleanup__`` / ``__pbOTPCleanup__``: the MFA sessions and one-time passwords older than their auth
  collection's ``mfa.duration`` / ``otp.duration`` deleted (expired ones are refused anyway);
- ``__pbLogsCleanup__``: the request logs older than ``logs.maxDays`` deleted;
- ``__pbAutoBackup__`` (listed while ``backups.cron`` is set): the scheduled backup made now, on a thread of
  the backups' threads, with its ``cronMaxKeep`` pruning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from pbfast.http import ApiError, HTTPProtocol
from pbfast.logs import component_logger
from pbfast.pocketbase import app_settings
from pbfast.pocketbase.apis.backups import BACKUP_THREADS, Backups
from pbfast.pocketbase.apis.request import TenantRequest, require_superuser, send_with_fields
from pbfast.pocketbase.collections.auth_options import AuthOptions
from pbfast.pocketbase.dbutils.identifiers import quote
from pbfast.pocketbase.dbutils.transaction import write_transaction
from pbfast.pocketbase.gocompat.datetimes import format_datetime_value
from pbfast.pocketbase.request_logs import RequestLogs
from pbfast.pocketbase.tenant import Tenant

__all__ = ["Crons", "delete_expired_mfas", "delete_expired_otps"]

log = component_logger("Crons")

MISSING_JOB: Final = "Missing or invalid cron job."
AUTO_BACKUP: Final = "__pbAutoBackup__"
# PocketBase's built-in jobs, in the order it lists them.
_BUILT_IN: Final = (("__pbDBOptimize__", "0 0 * * *"), ("__pbMFACleanup__", "0 * * * *"),
                    ("__pbOTPCleanup__", "0 * * * *"), ("__pbLogsCleanup__", "0 */6 * * *"))


@dataclass(frozen=True, slots=True)
class _BackupNow:
    """``__pbAutoBackup__`` run on demand: answered 204 at once, the backup made on the backups' threads."""

    run: Callable[[], None]

    async def send(self, proto: HTTPProtocol) -> None:
        BACKUP_THREADS.submit(self.run)
        proto.response_empty(204, [])


class Crons:
    """The handlers, with the process's request logs (for the logs cleanup) and backups (for the backup job)."""

    def __init__(self, logs: RequestLogs, backups: Backups) -> None:
        self.logs = logs
        self.backups = backups

    def list(self, request: TenantRequest) -> None:
        require_superuser(request)
        jobs = [{"id": job_id, "expression": expression} for job_id, expression in _jobs(request.tenant)]
        send_with_fields(request, jobs, sort_keys=False)

    def run(self, request: TenantRequest) -> None:
        require_superuser(request)
        job_id = request.params.get("id", "")
        if job_id not in dict(_jobs(request.tenant)):
            raise ApiError(404, MISSING_JOB)
        tenant = request.tenant
        if job_id == AUTO_BACKUP:
            plan = self.backups.plan_scheduled(tenant, datetime.now(UTC))

            def backup() -> None:
                outcome = self.backups.make_scheduled(tenant, plan)
                if outcome.error:
                    log.warning("tenant %s: backup %s run on demand failed: %s", tenant.id, outcome.name, outcome.error)

            request.after_turn = _BackupNow(backup)
            return
        if job_id == "__pbDBOptimize__":
            tenant.conn.execute("PRAGMA optimize")
        elif job_id == "__pbMFACleanup__":
            delete_expired_mfas(tenant)
        elif job_id == "__pbOTPCleanup__":
            delete_expired_otps(tenant)
        else:  # __pbLogsCleanup__
            self.logs.prune(tenant.directory, app_settings.load_settings(tenant.conn).logs.max_days)
        request.proto.response_empty(204, [])


def _jobs(tenant: Tenant) -> list[tuple[str, str]]:
    jobs = list(_BUILT_IN)
    cron = app_settings.load_settings(tenant.conn).backups.cron
    if cron:
        jobs.append((AUTO_BACKUP, cron))
    return jobs


def delete_expired_mfas(tenant: Tenant) -> None:
    """PocketBase's ``DeleteExpiredMFAs``."""
    _delete_expired(tenant, "_mfas", lambda auth: auth.mfa.duration)


def delete_expired_otps(tenant: Tenant) -> None:
    """PocketBase's ``DeleteExpiredOTPs``."""
    _delete_expired(tenant, "_otps", lambda auth: auth.otp.duration)


def _delete_expired(tenant: Tenant, system_collection: str, duration: Callable[[AuthOptions], int]) -> None:
    """Rows of ``_mfas``/``_otps`` older than their auth collection's duration (PocketBase checks every auth
    collection, with the option on or off)."""
    now = datetime.now(UTC)
    with write_transaction(tenant.conn):
        for collection in tenant.collections.values():
            if collection.type != "auth":
                continue
            oldest = format_datetime_value(now - timedelta(seconds=duration(collection.auth)))
            tenant.conn.execute(f"DELETE FROM {quote(system_collection)} WHERE collectionRef = ? AND created < ?",
                                (collection.id, oldest))
