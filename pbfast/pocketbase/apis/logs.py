"""``/api/logs`` (PocketBase's ``apis/logs.go``), for superusers: the tenant's request logs listed with
``filter``/``sort``/paging over ``id``, ``created``, ``level``, ``message``, ``data`` and ``data.*``, one log by
id, hourly counts (``/stats``), and ``DELETE`` (0.40) of them all. And :func:`request_entry`, the log a
request leaves (PocketBase's activity logger), written off the request path by
:class:`~pbfast.pocketbase.request_logs.RequestLogs`."""

from __future__ import annotations

import time
from typing import Any, Final

import apsw
import orjson

from pbfast.http import ApiError
from pbfast.pocketbase import search
from pbfast.pocketbase.gocompat import go_json_default
from pbfast.pocketbase.apis.request import BAD_REQUEST, NOT_FOUND, TenantRequest, require_superuser, send_with_fields
from pbfast.pocketbase.apis.settings import client_ip, real_ip
from pbfast.pocketbase.request_logs import (ERROR_LEVEL, INFO_LEVEL, LogEntry, RequestLogs, cached_settings,
                                            open_auxiliary)
from pbfast.pocketbase.search import FilterError
from pbfast.pocketbase.search.simple_resolver import SimpleFieldResolver
from pbfast.pocketbase.sqlite_guard import TimeLimit, harden

__all__ = ["delete_logs", "list_logs", "logs_stats", "request_entry", "view_log", "with_final_status"]

LOG_FIELDS: Final = SimpleFieldResolver(["id", "created", "level", "message", "data", r"^data\.[\w\.\:]*\w+$"])
_COLUMNS: Final = "id, created, data, message, level"
READ_SECONDS: Final = 10.0  # the longest a logs query may run (the logs are the tenant's own, its filter too)


def request_entry(request: TenantRequest, started: float, status: int, error: ApiError | None,
                  skip_success: bool) -> LogEntry | None:
    """The log of one finished request under the tenant's ``logs`` settings (None: not logged). Runs on the
    tenant's database thread (it reads the settings and the request's auth). Only gathers the fields: the row
    (its cuts of long values, message, JSON, time text) is made on the writer thread, natively."""
    settings = cached_settings(request.tenant)
    logs = settings.logs
    failed = status >= 400
    if logs.max_days <= 0 or (skip_success and not failed):
        return None
    level = ERROR_LEVEL if failed else INFO_LEVEL
    if level < logs.min_level:
        return None
    scope = request.scope
    query = scope.query_string
    headers = scope.headers
    auth = request.auth
    remote = user_ip = None
    if logs.log_ip:
        remote = client_ip(request)
        user_ip = real_ip(request, settings, remote) if settings.trusted_proxy_headers else remote
    message = details = None
    if failed:
        message = error.message if error is not None else ""
        if error is not None and error.data:
            # go_json_default: error data may carry Go-typed numbers (a field's limits), as the answers do
            details = orjson.dumps(error.data, option=orjson.OPT_SORT_KEYS, default=go_json_default)
    return (request.tenant.directory, logs.max_days, level, scope.method,
            f"{request.path}?{query}" if query else request.path, status, (time.perf_counter() - started) * 1000,
            headers.get("referer") or "", headers.get("user-agent") or "",
            auth.collection.name if auth is not None else "",
            str(auth.record.get("id", "")) if auth is not None and logs.log_auth_id else None,
            user_ip, remote, message, details, time.time())


def with_final_status(entry: LogEntry, status: int, message: str | None) -> LogEntry:
    """``entry`` (logged at the end of the request's turn) once the answer's slow part, done after the turn (a
    file read from the store, a backup uploaded), decided the final ``status``: its level, status, error message
    and execTime as PocketBase logs the whole request."""
    directory, max_days, _, method, url, _, exec_ms, referer, agent, auth, auth_id, user_ip, remote, _, _, created \
        = entry
    failed = status >= 400
    exec_ms += max(0.0, time.time() - created) * 1000
    return (directory, max_days, ERROR_LEVEL if failed else INFO_LEVEL, method, url, status, exec_ms, referer, agent,
            auth, auth_id, user_ip, remote, (message or "") if failed else None, None, created)


# ---- the API --------------------------------------------------------------------------------------------


def _connection(request: TenantRequest, *, hardened: bool = True) -> apsw.Connection | None:
    conn = open_auxiliary(request.tenant.directory, create=False)
    if conn is not None and hardened:
        harden(conn)  # the filter is the client's
    return conn


def _log_json(row: dict[str, Any]) -> dict[str, Any]:
    try:
        data = orjson.loads(row["data"])
    except (orjson.JSONDecodeError, TypeError):
        data = {}
    return {"id": row["id"], "created": row["created"], "data": data, "message": row["message"],
            "level": row["level"]}


def list_logs(logs: RequestLogs, request: TenantRequest) -> None:
    require_superuser(request)
    try:
        page, per_page = search.parse_paging(request.query("page"), request.query("perPage"))
        skip_total = search.parse_skip_total(request.query("skipTotal"))
        projection = search.parse_fields(request.query("fields") or "")
        user_filter = request.query("filter") or ""
        compiled = search.compile_list_query([user_filter] if user_filter else [], request.query("sort") or "",
                                             LOG_FIELDS)
    except (FilterError, ValueError) as err:
        raise ApiError(400, BAD_REQUEST) from err
    logs.flush()
    conn = _connection(request)
    if conn is None:
        listed = search.Page([], page, per_page, 0, 0)
    else:
        try:
            with TimeLimit(conn).running(READ_SECONDS):
                listed = search.fetch_page(conn, "_logs", _COLUMNS, compiled.where, compiled.params,
                                           compiled.order_by, page, per_page, skip_total)
        except apsw.SQLError as err:
            raise ApiError(400, BAD_REQUEST) from err
        finally:
            conn.close()
    items = [_log_json(row) for row in listed.rows]
    if projection:
        items = search.apply_fields_many(items, projection)
    request.send_json(200, {"items": items, "page": page, "perPage": per_page, "totalItems": listed.total,
                            "totalPages": listed.pages}, sort_keys=False)


def logs_stats(logs: RequestLogs, request: TenantRequest) -> None:
    require_superuser(request)
    user_filter = request.query("filter") or ""
    where, params = "", ()
    if user_filter:
        try:
            compiled = search.compile_list_query([user_filter], "", LOG_FIELDS)
        except (FilterError, ValueError) as err:
            raise ApiError(400, "Invalid filter format.") from err
        if compiled.where and compiled.where != "1=1":
            where, params = f" WHERE {compiled.where}", tuple(compiled.params)
    logs.flush()
    conn = _connection(request)
    stats: list[dict[str, Any]] = []
    if conn is not None:
        try:
            with TimeLimit(conn).running(READ_SECONDS):
                rows = conn.execute("SELECT count(id) AS total, strftime('%Y-%m-%d %H:00:00', created) AS date "
                                    f"FROM _logs{where} GROUP BY date", params).fetchall()
        except apsw.SQLError as err:
            raise ApiError(400, "Failed to generate logs stats.") from err
        finally:
            conn.close()
        stats = [{"date": f"{date}.000Z" if date else "", "total": total} for total, date in rows]
    send_with_fields(request, stats, sort_keys=False)


def view_log(logs: RequestLogs, request: TenantRequest) -> None:
    require_superuser(request)
    logs.flush()
    conn = _connection(request)
    row = None
    if conn is not None:
        try:
            cursor = conn.execute(f"SELECT {_COLUMNS} FROM _logs WHERE id = ? LIMIT 1", (request.params["id"],))
            values = cursor.fetchone()
            if values is not None:
                row = dict(zip(("id", "created", "data", "message", "level"), values))
        finally:
            conn.close()
    if row is None:
        raise ApiError(404, NOT_FOUND)
    send_with_fields(request, _log_json(row), sort_keys=False)


def delete_logs(logs: RequestLogs, request: TenantRequest) -> None:
    """``DELETE /api/logs`` (PocketBase 0.40): every log goes, and the space is given back."""
    require_superuser(request)
    logs.flush()
    conn = _connection(request, hardened=False)  # no client SQL; VACUUM is refused on hardened connections
    if conn is not None:
        try:
            conn.execute("DELETE FROM _logs")
            conn.execute("VACUUM")
        finally:
            conn.close()
    request.proto.response_empty(204, [])
