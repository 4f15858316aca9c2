"""``POST /api/collections/meta/dry-run-view`` (PocketBase's ``collectionDryRunView``, used by the dashboard
while a view collection's query is edited): the fields the query would give a view collection and up to 10
of its records, nothing written; ``GET /api/collections/meta/oauth2-providers``: the OAuth2 providers an auth
collection may configure, with their display names and logos. Superusers only."""

from __future__ import annotations

import secrets
import zlib
from typing import Any, Final

import apsw

from pbfast.http import ApiError
from pbfast.pocketbase.apis.record_auth_forms import VALIDATION_FAILED, required_error, string_form
from pbfast.pocketbase.apis.request import TenantRequest, require_superuser, send_with_fields
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.collections.table_sync import random_suffix
from pbfast.pocketbase.collections.views import view_fields
from pbfast.pocketbase.dbutils.tokenizer import UnbalancedTokenError, split_tokens
from pbfast.pocketbase.dbutils.transaction import sqlite_error_text
from pbfast.pocketbase.oauth2.providers import provider_list
from pbfast.pocketbase.records import Viewer
from pbfast.pocketbase.records.export import record_json
from pbfast.pocketbase.sqlite_guard import SqlRefused

__all__ = ["dry_run_view", "oauth2_providers"]

MAX_QUERY_LENGTH: Final = 5000
SAMPLE_SIZE: Final = 10
INVALID_QUERY: Final = "Invalid view query. Raw error: \n"


def oauth2_providers(request: TenantRequest) -> None:
    require_superuser(request)
    send_with_fields(request, provider_list(), sort_keys=False)


def dry_run_view(request: TenantRequest) -> None:
    require_superuser(request)
    form, _ = string_form(request, ("query",))
    query = form["query"]
    if not query:
        raise ApiError(400, VALIDATION_FAILED, {"query": required_error()})
    if len(query) > MAX_QUERY_LENGTH:
        raise ApiError(400, VALIDATION_FAILED, {"query": {
            "code": "validation_length_too_long", "message": f"The length must be no more than {MAX_QUERY_LENGTH}.",
            "params": {"max": MAX_QUERY_LENGTH, "min": 0}}})
    query = query.strip().strip(";")
    try:
        statements = split_tokens(query, ";")
    except UnbalancedTokenError:
        statements = []  # PocketBase's tokenizer gives up on these: SQLite judges them below
    if len(statements) > 1:
        raise _invalid("multiple statements are not supported")
    conn = request.tenant.conn
    try:
        fields = view_fields(conn, query, request.tenant.collections)
    except apsw.Error as err:
        raise _invalid(sqlite_error_text(err)) from err
    except ValueError as err:  # a wildcard, no id column, a refused statement
        raise _invalid(str(err)) from err
    name = "temp_view_" + random_suffix(5)
    # A throwaway collection, named and numbered as PocketBase names a new one (its id: "pbc_" + a checksum).
    temporary = Collection(id=f"pbc_{zlib.crc32((name + secrets.token_hex(4)).encode())}", name=name, type="view",
                           fields=fields)
    try:
        cursor = conn.execute(f"SELECT * FROM (SELECT * FROM ({query})) LIMIT {SAMPLE_SIZE}")
        names = [column[0] for column in cursor.getdescription()]
        rows = [dict(zip(names, row, strict=True)) for row in cursor]
    except (apsw.Error, SqlRefused) as err:
        raise _invalid("failed to retrieve query records: " + sqlite_error_text(err)) from err
    sample: list[dict[str, Any]] = []
    seen: set[str] = set()
    superuser = Viewer(superuser=True)
    for row in rows:
        record = record_json(temporary, row, superuser)
        record_id = record.get("id")
        if not record_id:
            raise _invalid("the query could return records with empty or invalid ids")
        if record_id in seen:
            raise _invalid("the query could return records with non-unique ids")
        seen.add(record_id)
        sample.append(record)
    send_with_fields(request, {"fields": [field.to_json() for field in fields], "sample": sample}, sort_keys=False)


def _invalid(raw_error: str) -> ApiError:
    """PocketBase's 400 for a query that failed (its messages end as sentences)."""
    message = INVALID_QUERY + raw_error
    return ApiError(400, message if message.endswith((".", "!", "?")) else message + ".")
