"""``POST /api/collections/meta/dry-run-view`` (PocketBase's ``collectionDryRunView``, used by the dashboard
while a view collection's query is edited): the fields the query would give a view collection and up to 10
of its records, nothing written; ``GET /api/collections/meta/oauth2-providers``: the OAuth2 providers an auth
collection may configure, with their display names and logos. Superusers only."""

from __future__ import annotations

import secrets
import zlib
from typing import Final

import apsw

from pbfast.http import ApiError
from pbfast.pocketbase.apis.record_auth_forms import VALIDATION_FAILED, required_error, string_form
from pbfast.pocketbase.apis.request import TenantRequest, require_superuser, send_with_fields
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.collections import views
from pbfast.pocketbase.dbutils.tokenizer import UnbalancedTokenError, split_tokens
from pbfast.pocketbase.dbutils.transaction import sqlite_error_text
from pbfast.pocketbase.oauth2.providers import provider_list
from pbfast.pocketbase.records import Viewer
from pbfast.pocketbase.records.export import record_json

__all__ = ["MAX_QUERY_LENGTH", "dry_run_view", "oauth2_providers", "query_form"]

MAX_QUERY_LENGTH: Final = 5000
INVALID_QUERY: Final = "Invalid view query. Raw error: \n"


def oauth2_providers(request: TenantRequest) -> None:
    require_superuser(request)
    send_with_fields(request, provider_list(), sort_keys=False)


def query_form(request: TenantRequest) -> str:
    """The ``query`` of a superuser's SQL form (the view dry run, the SQL console), validated as PocketBase
    validates it: required, at most :data:`MAX_QUERY_LENGTH` characters."""
    require_superuser(request)
    query = string_form(request, ("query",))[0]["query"]
    if not query:
        raise ApiError(400, VALIDATION_FAILED, {"query": required_error()})
    if len(query) > MAX_QUERY_LENGTH:
        raise ApiError(400, VALIDATION_FAILED, {"query": {
            "code": "validation_length_too_long", "message": f"The length must be no more than {MAX_QUERY_LENGTH}.",
            "params": {"max": MAX_QUERY_LENGTH, "min": 0}}})
    return query


def dry_run_view(request: TenantRequest) -> None:
    query = query_form(request).strip().strip(";")
    try:
        statements = split_tokens(query, ";")
    except UnbalancedTokenError:
        statements = []  # PocketBase's tokenizer gives up on these: SQLite judges them below
    if len(statements) > 1:
        raise _invalid("multiple statements are not supported")
    conn = request.tenant.conn
    try:
        sample = views.dry_run_view(conn, query, request.tenant.collections)
    except apsw.Error as err:
        raise _invalid(sqlite_error_text(err)) from err
    except ValueError as err:  # a wildcard, no id column, a refused statement, the sample's ids or its query
        raise _invalid(str(err)) from err
    # A throwaway collection, named and numbered as PocketBase names a new one (its id: "pbc_" + a checksum).
    temporary = Collection(id=f"pbc_{zlib.crc32((sample.name + secrets.token_hex(4)).encode())}", name=sample.name,
                           type="view", fields=sample.fields)
    superuser = Viewer(superuser=True)
    records = [record_json(temporary, row, superuser) for row in sample.rows]
    send_with_fields(request, {"fields": [field.to_json() for field in sample.fields], "sample": records},
                     sort_keys=False)


def _invalid(raw_error: str) -> ApiError:
    """PocketBase's 400 for a query that failed (its messages end as sentences)."""
    message = INVALID_QUERY + raw_error
    return ApiError(400, message if message.endswith((".", "!", "?")) else message + ".")
