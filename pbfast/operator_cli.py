"""Operator commands against a running control plane: ``pbfast tenant ...`` and ``pbfast node ...``.

The admin token comes from ``--admin-token``, else ``PBFAST_ADMIN_TOKEN``, else ``<data-dir>/admin.token``.
Output is a table by default and the API's JSON with ``--json``. API errors print one line (plus one line
per invalid field) and exit 1; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from pbfast.config import DEFAULT_CONTROL_PLANE_ADDR, DEFAULT_DATA_DIR, ConfigError, parse_address_list
from pbfast.cp_client import ControlPlaneError, ControlPlaneUnavailable, SyncControlPlaneClient
from pbfast.pocketbase.tenant import backup_database, check_pocketbase_database
from pbfast.tenant_node.replication import ReplicaStore
from pbfast.tokens import ADMIN_TOKEN_FILE

__all__ = ["add_operator_commands", "run_operator_command"]

EXIT_FAILED = 1

TENANT_COLUMNS = ("id", "status", "nodeId", "epoch", "storageQuotaMB", "apiRequestsQuota", "durability",
                  "usage.storageMB", "usage.apiRequests", "createdAt")
NODE_COLUMNS = ("id", "status", "address", "assignedTenants", "openTenants", "maxTenants", "load",
                "lastHeartbeatAt")


UNLIMITED = "unlimited"


def _quota(value: str) -> int | str:
    if value.lower() in (UNLIMITED, "none", "null"):
        return UNLIMITED
    try:
        number = int(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'unlimited', got {value!r}") from err
    if number < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {number}")
    return number


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--control-plane-addrs", default=DEFAULT_CONTROL_PLANE_ADDR,
                        help=f"comma-separated control plane host:port (default {DEFAULT_CONTROL_PLANE_ADDR})")
    parser.add_argument("--admin-token", help="admin token (else PBFAST_ADMIN_TOKEN, else <data-dir>/admin.token)")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="where admin.token is looked up")
    parser.add_argument("--json", action="store_true", help="print the API's JSON")


def add_operator_commands(commands: Any) -> None:
    """Register ``tenant`` and ``node`` sub-commands on the top-level sub-parser action."""
    tenant = commands.add_parser("tenant", help="manage tenants on a running cluster")
    tenant_commands = tenant.add_subparsers(dest="action", metavar="ACTION", required=True)

    create = tenant_commands.add_parser("create", help="create a tenant")
    create.add_argument("id")
    create.add_argument("--storage-quota-mb", type=_quota, help="MB, or 'unlimited' (default)")
    create.add_argument("--api-requests-quota", type=_quota, help="API requests per day, or 'unlimited' (default)")
    create.add_argument("--durability", choices=["async", "sync"])
    create.add_argument("--superuser-email")
    create.add_argument("--superuser-password")
    _common(create)

    listing = tenant_commands.add_parser("list", help="list tenants")
    listing.add_argument("--status", choices=["active", "suspended"])
    listing.add_argument("--node-id")
    listing.add_argument("--page", type=int, default=1)
    listing.add_argument("--per-page", type=int, default=200)
    _common(listing)

    get = tenant_commands.add_parser("get", help="show one tenant")
    get.add_argument("id")
    _common(get)

    update = tenant_commands.add_parser("update", help="change quotas, status or durability")
    update.add_argument("id")
    update.add_argument("--storage-quota-mb", type=_quota)
    update.add_argument("--api-requests-quota", type=_quota)
    update.add_argument("--status", choices=["active", "suspended"])
    update.add_argument("--durability", choices=["async", "sync"])
    _common(update)

    delete = tenant_commands.add_parser("delete", help="delete a tenant and its data")
    delete.add_argument("id")
    _common(delete)

    move = tenant_commands.add_parser("move", help="move a tenant to another node")
    move.add_argument("id")
    move.add_argument("node_id", metavar="NODE_ID")
    _common(move)

    superuser = tenant_commands.add_parser("superuser", help="manage a tenant's PocketBase superusers")
    superuser_commands = superuser.add_subparsers(dest="superuser_action", metavar="ACTION", required=True)
    upsert = superuser_commands.add_parser("upsert", help="create or update a superuser")
    upsert.add_argument("id")
    upsert.add_argument("email")
    upsert.add_argument("password")
    _common(upsert)

    importing = tenant_commands.add_parser("import", help="create a tenant from a stock PocketBase data dir")
    importing.add_argument("id")
    importing.add_argument("pb_data_dir", metavar="PB_DATA_DIR")
    importing.add_argument("--storage-quota-mb", type=_quota)
    importing.add_argument("--api-requests-quota", type=_quota)
    _common(importing)

    export = tenant_commands.add_parser("export", help="write a tenant's data dir that stock PocketBase serves")
    export.add_argument("id")
    export.add_argument("out_dir", metavar="OUT_DIR")
    _common(export)

    restore = tenant_commands.add_parser(
        "restore", help="restore a tenant's database from its replica (latest or a point in time) into a data dir")
    restore.add_argument("id")
    restore.add_argument("--to", required=True, metavar="DIR",
                         help="write DIR/data.db (a data dir stock PocketBase serves); in-place restore is not "
                              "offered yet")
    restore.add_argument("--at", metavar="TIMESTAMP", help="point in time, RFC 3339 (e.g. 2026-11-28T12:00:00Z)")
    restore.add_argument("--s3-endpoint", help="the cluster's S3 endpoint (omit for a local replica directory)")
    restore.add_argument("--s3-bucket", default="pbfast")
    restore.add_argument("--replica-dir", help="local replica root (default: <data-dir>/replica)")
    _common(restore)

    node = commands.add_parser("node", help="inspect tenant nodes")
    node_commands = node.add_subparsers(dest="action", metavar="ACTION", required=True)
    _common(node_commands.add_parser("list", help="list tenant nodes"))


def _admin_token(args: argparse.Namespace, environ: dict[str, str]) -> str:
    if args.admin_token:
        return str(args.admin_token)
    if environ.get("PBFAST_ADMIN_TOKEN"):
        return environ["PBFAST_ADMIN_TOKEN"]
    path = Path(args.data_dir) / ADMIN_TOKEN_FILE
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as err:
        raise ConfigError(f"no admin token: pass --admin-token, set PBFAST_ADMIN_TOKEN, or point --data-dir at "
                          f"a directory holding {ADMIN_TOKEN_FILE} ({path}: {err.strerror})") from err


def _cell(row: dict[str, Any], column: str) -> str:
    value: Any = row
    for key in column.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    if value is None:
        return "-" if column != "storageQuotaMB" and column != "apiRequestsQuota" else "unlimited"
    return str(value)


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[_cell(row, c) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def _body(args: argparse.Namespace, names: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Fields given on the command line (``unlimited`` quotas become null)."""
    given = {}
    for attr, field in names:
        value = getattr(args, attr, None)
        if value is not None:
            given[field] = None if value == UNLIMITED else value
    return given


def run_operator_command(args: argparse.Namespace, environ: dict[str, str], out: Callable[[str], None] = print) -> int:
    try:
        token = _admin_token(args, environ)
        addresses = parse_address_list(args.control_plane_addrs, "--control-plane-addrs")
    except ConfigError as err:
        print(f"pbfast: error: {err}", file=sys.stderr)
        return 2
    client = SyncControlPlaneClient(addresses, token)
    try:
        result, columns = _dispatch(client, args)
    except ControlPlaneError as err:
        print(f"pbfast: error: {err.status} {err.body.get('message', '')}", file=sys.stderr)
        for field, problem in (err.body.get("data") or {}).items():
            print(f"  {field}: {orjson.dumps(problem).decode()}", file=sys.stderr)
        return EXIT_FAILED
    except ControlPlaneUnavailable as err:
        print(f"pbfast: error: {err}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        client.close()
    if args.json:
        out(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() if result is not None else "{}")
    elif columns is None:
        out(f"deleted tenant {args.id}")
    else:
        rows = result["items"] if isinstance(result, dict) and "items" in result else [result]
        out(_table(rows, columns))
        if isinstance(result, dict) and "totalItems" in result and result["totalPages"] > 1:
            out(f"page {result['page']} of {result['totalPages']} ({result['totalItems']} tenants)")
    return 0


def import_tenant(client: SyncControlPlaneClient, args: argparse.Namespace,
                  quotas: Sequence[tuple[str, str]]) -> Any:
    """Snapshot ``PB_DATA_DIR/data.db`` consistently (it may be in use), create the tenant, upload it."""
    source = Path(args.pb_data_dir) / "data.db"
    if not source.is_file():
        raise ControlPlaneError(400, {"message": f"{source} does not exist: PB_DATA_DIR must hold data.db"})
    with tempfile.TemporaryDirectory(prefix="pbfast-import-") as scratch:
        snapshot = Path(scratch) / "data.db"
        backup_database(source, snapshot)
        problem = check_pocketbase_database(snapshot)
        if problem:
            raise ControlPlaneError(400, {"message": f"{source}: {problem}"})
        created = client.request("POST", "/api/cp/tenants", {"id": args.id, **_body(args, quotas[:2])})
        try:
            with open(snapshot, "rb") as data:
                return client.upload("PUT", f"/api/cp/tenants/{args.id}/data", data)
        except (ControlPlaneError, ControlPlaneUnavailable):
            client.request("DELETE", f"/api/cp/tenants/{created['id']}")  # no half-imported tenant stays
            raise


def export_tenant(client: SyncControlPlaneClient, args: argparse.Namespace) -> dict[str, Any]:
    """Download a snapshot into ``OUT_DIR/data.db`` (written to a temporary name, then renamed)."""
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "data.db"
    if target.exists():
        raise ControlPlaneError(409, {"message": f"{target} already exists; choose an empty OUT_DIR"})
    partial = out_dir / ".data.db.partial"
    size = client.download(f"/api/cp/tenants/{args.id}/data", partial)
    problem = check_pocketbase_database(partial)
    if problem:
        partial.unlink(missing_ok=True)
        raise ControlPlaneError(502, {"message": f"the exported database is damaged: {problem}"})
    os.replace(partial, target)
    return {"tenantId": args.id, "path": str(target.resolve()), "bytes": size}


def restore_tenant(client: SyncControlPlaneClient, args: argparse.Namespace) -> dict[str, Any]:
    """Restore with the stock ``litestream`` binary into ``--to``/data.db, showing progress on stderr."""
    at = None
    if args.at:
        try:
            moment = datetime.fromisoformat(args.at.replace("Z", "+00:00"))
        except ValueError as err:
            raise ControlPlaneError(400, {"message": f"--at: not an RFC 3339 timestamp: {args.at!r}"}) from err
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        at = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    tenant = client.request("GET", f"/api/cp/tenants/{args.id}")
    store = ReplicaStore(args.s3_bucket, args.s3_endpoint,
                         Path(args.replica_dir) if args.replica_dir else Path(args.data_dir) / "replica")
    out_dir = Path(args.to)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "data.db"
    if target.exists():
        raise ControlPlaneError(409, {"message": f"{target} already exists; choose an empty --to directory"})
    partial = out_dir / ".data.db.restoring"
    command = ["litestream", "restore", "-o", str(partial)]
    if at:
        command += ["-timestamp", at]
    command.append(store.url(args.id, tenant.get("incarnation", "0")))
    started = time.monotonic()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=store.environment()) as run:
        while run.poll() is None:
            size = sum(p.stat().st_size for p in out_dir.glob(".data.db.restoring*") if p.is_file())
            elapsed = time.monotonic() - started
            bar = "#" * min(30, int(elapsed * 4) % 31)
            print(f"\rrestoring {args.id} [{bar:<30}] {size / (1 << 20):8.2f} MiB {elapsed:5.1f} s", end="",
                  file=sys.stderr, flush=True)
            time.sleep(0.1)
        output = run.stdout.read().decode(errors="replace") if run.stdout else ""
    print(file=sys.stderr)
    if run.returncode != 0 or not partial.exists():
        for leftover in out_dir.glob(".data.db.restoring*"):
            leftover.unlink(missing_ok=True)
        raise ControlPlaneError(502, {"message": f"restore failed: {output.strip()[-300:] or 'no replica found'}"})
    problem = check_pocketbase_database(partial)
    if problem:
        partial.unlink(missing_ok=True)
        raise ControlPlaneError(502, {"message": f"the restored database is damaged: {problem}"})
    os.replace(partial, target)
    return {"tenantId": args.id, "path": str(target.resolve()), "bytes": target.stat().st_size, "at": at or "latest"}


def _dispatch(client: SyncControlPlaneClient, args: argparse.Namespace) -> tuple[Any, Sequence[str] | None]:
    quotas = (("storage_quota_mb", "storageQuotaMB"), ("api_requests_quota", "apiRequestsQuota"),
              ("durability", "durability"))
    if args.command == "node":
        return client.request("GET", "/api/cp/nodes"), NODE_COLUMNS
    if args.action == "create":
        body: dict[str, Any] = {"id": args.id, **_body(args, quotas)}
        if args.superuser_email or args.superuser_password:
            body["superuser"] = {"email": args.superuser_email or "", "password": args.superuser_password or ""}
        return client.request("POST", "/api/cp/tenants", body), TENANT_COLUMNS
    if args.action == "list":
        params = {"page": args.page, "perPage": args.per_page}
        if args.status:
            params["status"] = args.status
        if args.node_id:
            params["nodeId"] = args.node_id
        return client.request("GET", "/api/cp/tenants", params=params), TENANT_COLUMNS
    if args.action == "get":
        return client.request("GET", f"/api/cp/tenants/{args.id}"), TENANT_COLUMNS
    if args.action == "update":
        body = _body(args, (*quotas, ("status", "status")))
        return client.request("PATCH", f"/api/cp/tenants/{args.id}", body), TENANT_COLUMNS
    if args.action == "delete":
        return client.request("DELETE", f"/api/cp/tenants/{args.id}"), None
    if args.action == "superuser":
        body = {"email": args.email, "password": args.password}
        return client.request("PUT", f"/api/cp/tenants/{args.id}/superusers", body), ("tenantId", "email")
    if args.action == "import":
        return import_tenant(client, args, quotas), TENANT_COLUMNS
    if args.action == "export":
        return export_tenant(client, args), ("tenantId", "path", "bytes")
    if args.action == "restore":
        return restore_tenant(client, args), ("tenantId", "path", "bytes", "at")
    if args.action == "move":
        return client.request("POST", f"/api/cp/tenants/{args.id}/move", {"nodeId": args.node_id}), TENANT_COLUMNS
    raise AssertionError(f"unhandled action {args.action!r}")
