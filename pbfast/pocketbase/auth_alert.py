"""Login alerts (PocketBase's ``authAlert`` in ``apis/record_helpers.go``): with the collection's
``authAlert`` on, every completed login records its origin (an MD5 fingerprint of the client's address and
user agent) in ``_authOrigins``; a login from an origin the record has not used before, when it has logged
in before, mails the collection's alert template to the record. At most 5 origins are kept per record.

Difference: PocketBase waits up to 15 s for the alert mail before it answers the login; pbfast sends it in
the background (the login does not hold the tenant's database turn for a mail server).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Final

import apsw

from pbfast.logs import component_logger
from pbfast.pocketbase import app_settings, gocompat, mails, records
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.dbutils.identifiers import quote
from pbfast.pocketbase.dbutils.transaction import write_transaction
from pbfast.pocketbase.records import Row
from pbfast.pocketbase.tenant import Tenant

__all__ = ["AUTH_ORIGINS", "record_login"]

log = component_logger("TenantNode")

AUTH_ORIGINS: Final = "_authOrigins"
MAX_ORIGINS: Final = 5


def record_login(tenant: Tenant, collection: Collection, record: Row, ip: str, user_agent: str) -> None:
    """Note the login's origin and alert the record when it is new (failures are logged: the login stands)."""
    origins_collection = tenant.collection(AUTH_ORIGINS)
    if origins_collection is None:
        return
    if len(user_agent) > 200:
        user_agent = user_agent[:200] + "..."
    fingerprint = hashlib.md5((ip + user_agent).encode(), usedforsecurity=False).hexdigest()
    table = quote(AUTH_ORIGINS)
    try:
        origins = list(tenant.conn.execute(
            f"SELECT id, fingerprint FROM {table} WHERE collectionRef = ? AND recordRef = ? "
            "ORDER BY created DESC, rowid DESC", (collection.id, record["id"])))
        current = next((row for row in origins if row[1] == fingerprint), None)
        if current is not None:
            with write_transaction(tenant.conn):
                tenant.conn.execute(f"UPDATE {table} SET updated = ? WHERE id = ?",
                                    (gocompat.format_datetime_value(datetime.now(UTC)), current[0]))
            return
        if origins and record.get("email"):
            settings = app_settings.load_settings(tenant.conn)
            when = gocompat.format_datetime_value(datetime.now(UTC))
            mail = mails.auth_alert_mail(settings, collection, record, f"{when} - {ip} {user_agent}")
            mails.send_in_background(tenant.id, settings, mail, "login alert")
        with write_transaction(tenant.conn):
            for stale in origins[MAX_ORIGINS - 1:]:  # room for the new one
                tenant.conn.execute(f"DELETE FROM {table} WHERE id = ?", (stale[0],))
        records.save_record(tenant, origins_collection, {"collectionRef": collection.id, "recordRef": record["id"],
                                                         "fingerprint": fingerprint}, None, manage=True, superuser=True)
    except (apsw.Error, records.RecordValidationError) as err:
        log.warning("tenant %s: recording the login origin of %s failed: %s", tenant.id, record["id"], err)
