"""Multi-factor authentication sessions (the ``_mfas`` system collection), as PocketBase 0.40 keeps them.

PocketBase (``apis/record_helpers.go`` ``checkMFA``, ``core/mfa_model.go``): when an auth collection has
MFA on (and its ``mfa.rule`` holds for the record, or is empty), a successful first auth method does not log
in: it stores an ``_mfas`` row (``collectionRef``, ``recordRef``, ``method``, ``created``) and answers
``401 {"mfaId": ...}``. The client then authenticates again with another method and that ``mfaId``; the
session must belong to the same record, be younger than the collection's ``mfa.duration`` seconds and have
been opened by a *different* method, and is deleted once used. Changing the record's password deletes its
sessions (``records.save_record``); deleting the record or its collection deletes them too
(``collections.delete_records``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import parse_qs

import apsw

from pbfast.http import ApiError
from pbfast.logs import component_logger
from pbfast.pocketbase import gocompat
from pbfast.pocketbase.dbutils.identifiers import quote
from pbfast.pocketbase.dbutils.transaction import write_transaction
from pbfast.pocketbase.records import load_row, save_record
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.tenant import Tenant

__all__ = ["MFA_COLLECTION", "PASSWORD_METHOD", "MfaOptions", "finish_session", "start_session",
           "submitted_mfa_id"]

log = component_logger("TenantNode")

MFA_COLLECTION: Final = "_mfas"
PASSWORD_METHOD: Final = "password"  # PocketBase's core.MFAMethodPassword


@dataclass(frozen=True, slots=True)
class MfaOptions:
    """An auth collection's ``mfa`` options."""

    enabled: bool
    duration_seconds: int
    rule: str

    @staticmethod
    def of(collection: Collection) -> MfaOptions:
        config = collection.auth.mfa
        return MfaOptions(config.enabled, config.duration, config.rule)


def submitted_mfa_id(query_string: str, body: Mapping[str, Any]) -> str:
    """The ``mfaId`` of the request: the query parameter (its first value), else the body's ``mfaId``.
    A body value that is not a string is 400, as PocketBase fails to bind it."""
    from_query = parse_qs(query_string, keep_blank_values=True).get("mfaId", [""])[0]
    if from_query:
        return from_query
    value = body.get("mfaId")
    if value is not None and not isinstance(value, str):
        raise ApiError(400, "Failed to read MFA Id.")
    return value or ""


def _sessions(tenant: Tenant) -> Collection:
    collection = tenant.collection(MFA_COLLECTION)
    if collection is None:  # every tenant has it (system collection): a damaged database
        raise ApiError(500, "Failed to create MFA record.")
    return collection


def start_session(tenant: Tenant, collection: Collection, record_id: str, method: str) -> str:
    """Store a new MFA session for the record after its first auth ``method``; returns its id."""
    stored = save_record(tenant, _sessions(tenant), {"collectionRef": collection.id, "recordRef": record_id,
                                                     "method": method}, None, manage=True, superuser=True)
    return str(stored["id"])


def finish_session(tenant: Tenant, collection: Collection, record_id: str, method: str, mfa_id: str,
                   options: MfaOptions, now: datetime | None = None) -> None:
    """Check the session ``mfa_id`` against a second auth ``method`` of the record and use it up; raises
    ``ApiError(400)`` with PocketBase's message when it cannot complete the login."""
    sessions = _sessions(tenant)
    session = load_row(tenant, sessions, mfa_id)
    created = gocompat.parse_datetime(session.get("created")) if session is not None else None
    moment = now or datetime.now(UTC)
    if session is None or created is None or moment - created > timedelta(seconds=options.duration_seconds):
        if session is not None:
            _delete(tenant, sessions, mfa_id)
        raise ApiError(400, "Invalid or expired MFA session.")
    if session.get("recordRef") != record_id or session.get("collectionRef") != collection.id:
        raise ApiError(400, "Invalid MFA session.")
    if session.get("method") == method:
        raise ApiError(400, "A different authentication method is required.")
    _delete(tenant, sessions, mfa_id)


def _delete(tenant: Tenant, sessions: Collection, mfa_id: str) -> None:
    try:
        with write_transaction(tenant.conn):
            tenant.conn.execute(f"DELETE FROM {quote(sessions.name)} WHERE id = ?", (mfa_id,))
    except apsw.Error as err:  # PocketBase only logs a failed delete of a used or expired session
        log.warning("tenant %s: deleting MFA session %s failed: %s", tenant.id, mfa_id, err)

