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
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from pbfast.binaries import LITESTREAM, MissingBinary, find_binary
from pbfast.config import DEFAULT_CONTROL_PLANE_ADDR, DEFAULT_DATA_DIR, ConfigError, parse_address_list
from pbfast.cp_client import ControlPlaneError, ControlPlaneUnavailable, SyncControlPlaneClient
from pbfast.incarnations import Life, life_at, lives_from_json
from pbfast.pocketbase.filesystem import StorageError
from pbfast.pocketbase.tenant import backup_database, check_pocketbase_database
from pbfast.tenant_node.data_archive import unpack
from pbfast.tenant_node.replica import ReplicaStore
from pbfast.timefmt import format_rfc3339, parse_rfc3339
from pbfast.tokens import ADMIN_TOKEN_FILE

__all__ = ["add_operator_commands", "run_operator_command"]

EXIT_FAILED = 1

TENANT_COLUMNS = ("id", "status", "nodeId", "epoch", "storageQuotaMB", "apiRequestsQuota", "durability",
                  "usage.storageMB", "usage.apiRequests", "createdAt")
RESTORED_COLUMNS = (*TENANT_COLUMNS, "incarnation", "restoredFrom.at")
# How long the CLI waits for an in-place restore: more than the control plane's worst case
# (pbfast.control_plane.api.RESTORE_WORST_CASE_SECONDS, about 385 s: the node's release, 45 s, the trial
# restore, up to 305 s, a few Raft commands), so the answer, not a timeout, tells what happened.
RESTORE_REQUEST_TIMEOUT_SECONDS = 450.0
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
    create.add_argument("--request-time-limit-ms", type=_quota,
                        help="ms of database work one request may take (default: the node's --request-time-limit)")
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
    update.add_argument("--request-time-limit-ms", type=_quota,
                        help="ms of database work one request may take; 'unlimited': the node's default")
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
        "restore", help="roll a tenant back in place to a point in time (--at), or write its state (latest or "
                        "--at) from its replica into a data dir (--to)",
        description="Without --to: the tenant itself is rolled back to its state at --at and goes on serving "
                    "from there (a new incarnation seeded from the replica; the replaced one stays in the "
                    "tenant's history, so this can be undone by restoring to a time before it). With --to: "
                    "nothing changes on the cluster; DIR/data.db gets the state from the replica of the "
                    "incarnation that was live then.")
    restore.add_argument("id")
    restore.add_argument("--to", metavar="DIR",
                         help="write DIR/data.db (a data dir stock PocketBase serves) instead of restoring in place")
    restore.add_argument("--at", metavar="TIMESTAMP",
                         help="point in time, RFC 3339 (e.g. 2026-11-28T12:00:00Z; without an offset: UTC); "
                              "required without --to, default the latest state with --to")
    restore.add_argument("--s3-endpoint", help="with --to: the cluster's S3 endpoint (omit for a local replica "
                                               "directory)")
    restore.add_argument("--s3-bucket", default="pbfast", help="with --to: the cluster's S3 bucket")
    restore.add_argument("--replica-dir", help="with --to: local replica root (default: <data-dir>/replica)")
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


def _usage_problem(args: argparse.Namespace) -> str | None:
    """A combination of arguments argparse cannot express, as the message of a usage error."""
    if args.command == "tenant" and args.action == "restore" and not args.to and not args.at:
        return ("tenant restore: --at TIMESTAMP is required to restore in place (the latest state is what the "
                "tenant serves already); add --to DIR to write the latest state into a data dir instead")
    return None


def run_operator_command(args: argparse.Namespace, environ: dict[str, str], out: Callable[[str], None] = print) -> int:
    problem = _usage_problem(args)
    if problem:
        print(f"pbfast: error: {problem}", file=sys.stderr)
        return 2
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
    """Snapshot ``PB_DATA_DIR/data.db`` consistently (it may be in use), create the tenant, upload it — with
    the files of ``PB_DATA_DIR/storage`` when there are any (one tar of both)."""
    source = Path(args.pb_data_dir) / "data.db"
    if not source.is_file():
        raise ControlPlaneError(400, {"message": f"{source} does not exist: PB_DATA_DIR must hold data.db"})
    with tempfile.TemporaryDirectory(prefix="pbfast-import-") as scratch:
        snapshot = Path(scratch) / "data.db"
        backup_database(source, snapshot)
        problem = check_pocketbase_database(snapshot)
        if problem:
            raise ControlPlaneError(400, {"message": f"{source}: {problem}"})
        upload = _with_storage(snapshot, Path(args.pb_data_dir) / "storage", Path(scratch) / "pb_data.tar")
        created = client.request("POST", "/api/cp/tenants", {"id": args.id, **_body(args, quotas[:2])})
        try:
            with open(upload, "rb") as data:
                return client.upload("PUT", f"/api/cp/tenants/{args.id}/data", data)
        except (ControlPlaneError, ControlPlaneUnavailable):
            client.request("DELETE", f"/api/cp/tenants/{created['id']}")  # no half-imported tenant stays
            raise


def _with_storage(snapshot: Path, storage: Path, archive: Path) -> Path:
    """``snapshot`` alone, or a tar of it (``data.db``) and the files of ``storage`` (PocketBase's metadata
    files, ``*.attrs``, left out)."""
    files = [p for p in sorted(storage.rglob("*")) if p.is_file() and not p.name.endswith(".attrs")] \
        if storage.is_dir() else []
    if not files:
        return snapshot
    with tarfile.open(archive, "w:") as tar:
        tar.add(snapshot, arcname="data.db")
        for path in files:
            tar.add(path, arcname="storage/" + path.relative_to(storage).as_posix())
    return archive


def export_tenant(client: SyncControlPlaneClient, args: argparse.Namespace) -> dict[str, Any]:
    """Download a snapshot with its files into ``OUT_DIR`` (``data.db`` and ``storage/``, PocketBase's data
    dir; the database written to a temporary name, checked, then renamed)."""
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "data.db"
    if target.exists():
        raise ControlPlaneError(409, {"message": f"{target} already exists; choose an empty OUT_DIR"})
    partial = out_dir / ".pb_data.tar.partial"
    size = client.download(f"/api/cp/tenants/{args.id}/data?files=1", partial)
    database = out_dir / ".data.db.partial"
    try:
        files = unpack(partial, database, out_dir / "storage")
    except (ValueError, OSError, tarfile.TarError, StorageError) as err:
        database.unlink(missing_ok=True)
        raise ControlPlaneError(502, {"message": f"the export is damaged: {err}"}) from err
    finally:
        partial.unlink(missing_ok=True)
    problem = check_pocketbase_database(database)
    if problem:
        database.unlink(missing_ok=True)
        raise ControlPlaneError(502, {"message": f"the exported database is damaged: {problem}"})
    os.replace(database, target)
    return {"tenantId": args.id, "path": str(target.resolve()), "bytes": size, "files": files}


def _point_in_time(text: str) -> tuple[str, float]:
    """``--at``: RFC 3339 (a timestamp without an offset is taken as UTC), normalised as the control plane
    does, and as Unix seconds."""
    try:
        moment = parse_rfc3339(text)
    except ValueError:
        try:
            naive = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError as err:
            raise ControlPlaneError(400, {"message": f"--at: not an RFC 3339 timestamp: {text!r}"}) from err
        moment = (naive if naive.tzinfo else naive.replace(tzinfo=UTC)).astimezone(UTC)
    return format_rfc3339(moment), moment.timestamp()


def restore_in_place(client: SyncControlPlaneClient, args: argparse.Namespace) -> Any:
    """Ask the control plane to roll the tenant back to ``--at`` (``POST /api/cp/tenants/{id}/restore``).
    Not retried on another member after a failure: the first may have got part of the way."""
    at, _ = _point_in_time(args.at)
    print(f"restoring {args.id} in place to {at} (the node tries the restore first) ...", file=sys.stderr, flush=True)
    return client.request("POST", f"/api/cp/tenants/{args.id}/restore", {"at": at},
                          timeout=RESTORE_REQUEST_TIMEOUT_SECONDS, retry_elsewhere=False)


def _litestream() -> str:
    """The litestream binary (see pbfast.binaries); its absence is an error naming it."""
    try:
        return str(find_binary(LITESTREAM))
    except MissingBinary as err:
        raise ControlPlaneError(500, {"message": str(err)}) from None


def _run_litestream(command: list[str], store: ReplicaStore, out_dir: Path, label: str) -> tuple[int, str]:
    """Run a ``litestream restore`` into ``out_dir``, showing progress on stderr; its exit status and output."""
    started = time.monotonic()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=store.environment()) as run:
        while run.poll() is None:
            size = sum(p.stat().st_size for p in out_dir.glob(".data.db.restoring*") if p.is_file())
            elapsed = time.monotonic() - started
            bar = "#" * min(30, int(elapsed * 4) % 31)
            print(f"\rrestoring {label} [{bar:<30}] {size / (1 << 20):8.2f} MiB {elapsed:5.1f} s", end="",
                  file=sys.stderr, flush=True)
            time.sleep(0.1)
        output = run.stdout.read().decode(errors="replace") if run.stdout else ""
    print(file=sys.stderr)
    return run.returncode, output


def _replica_span(store: ReplicaStore, url: str) -> tuple[float, float] | None:
    """When the replica's oldest and newest LTX files were written (Unix seconds, whole seconds: all that
    ``litestream ltx`` shows), or None when it has no file at all (the listing is only its header line)."""
    try:
        listing = subprocess.run([_litestream(), "ltx", "-level", "all", url], capture_output=True,
                                 env=store.environment(), timeout=120, check=False)
    except subprocess.TimeoutExpired as err:
        raise ControlPlaneError(502, {"message": f"listing the replica {url} timed out"}) from err
    if listing.returncode != 0:
        output = (listing.stdout + listing.stderr).decode(errors="replace").strip()
        raise ControlPlaneError(502, {"message": f"listing the replica failed: {output[-300:] or 'no output'}"})
    times = []
    for line in listing.stdout.decode(errors="replace").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 5:
            try:
                times.append(parse_rfc3339(fields[4]).timestamp())
            except ValueError:
                continue
    return (min(times), max(times)) if times else None


def _clear_partial(out_dir: Path) -> None:
    for leftover in out_dir.glob(".data.db.restoring*"):
        leftover.unlink(missing_ok=True)


def _not_restorable(incarnation: str, at: str) -> ControlPlaneError:
    return ControlPlaneError(400, {"message": f"--at: {at} is not restorable: the replica of incarnation "
                                              f"{incarnation} holds no state at that time (any more: its history "
                                              "there was pruned, or it is before its first write kept)"})


def _restore_replica(store: ReplicaStore, tenant_id: str, incarnation: str, point: tuple[str, float] | None,
                     out_dir: Path) -> bool:
    """Restore one incarnation's replica (latest, or as of ``point``) into ``out_dir/.data.db.restoring``.
    False when the incarnation has no replica file at all (nothing of it was ever shipped: its state at
    any time is its seed's); raises when its replica holds no state at that time, or on failure.

    Litestream answers "timestamp does not exist" both before a replica's first change and after its last
    one; after the last (an idle tenant, an ended incarnation), the latest state *is* the state at that time."""
    partial = out_dir / ".data.db.restoring"
    url = store.url(tenant_id, incarnation)
    label = f"{tenant_id} ({incarnation})"
    command = [_litestream(), "restore", "-if-replica-exists", "-o", str(partial)]
    code, output = _run_litestream([*command, *(["-timestamp", point[0]] if point else []), url], store, out_dir, label)
    if code == 0 and partial.exists():
        return True
    _clear_partial(out_dir)
    if code == 0 or (point is not None and "no backups found" in output):
        # "No replica" (exit 0 without a file), or no restore plan: which one, the listing tells.
        if _replica_span(store, url) is None:
            return False
        if point is None:
            raise ControlPlaneError(502, {"message": f"restore of incarnation {incarnation} found no restorable "
                                                     "state in its replica"})
        raise _not_restorable(incarnation, point[0])
    if point is not None and "timestamp does not exist" in output:
        span = _replica_span(store, url)
        if span is None:
            return False
        # The listing has whole seconds: the time is surely after the newest file if it is a second later,
        # or in the newest file's second when an older file came in an earlier second (it is not before
        # the first file, so Litestream refused it for being after the last). As the node judges it.
        if not (point[1] >= span[1] + 1 or point[1] >= span[1] > span[0]):
            raise _not_restorable(incarnation, point[0])
        code, output = _run_litestream([*command, url], store, out_dir, label)
        if code == 0 and partial.exists():
            return True
        _clear_partial(out_dir)
    raise ControlPlaneError(502, {"message": f"restore of incarnation {incarnation} failed: "
                                             f"{output.strip()[-300:] or 'no output'}"})


def restore_tenant(client: SyncControlPlaneClient, args: argparse.Namespace) -> dict[str, Any]:
    """Restore with the stock ``litestream`` binary into ``--to``/data.db, showing progress on stderr: the
    replica of the incarnation live at ``--at`` (the current one for the latest state), or that
    incarnation's seed if nothing of it was ever replicated (its state at any time is its seed's then). A
    replica that holds files but no state at ``--at`` (pruned, or before its first file kept) refuses."""
    point = _point_in_time(args.at) if args.at else None
    if point is not None and point[1] > time.time():
        raise ControlPlaneError(400, {"message": f"--at: {point[0]} is in the future"})
    tenant = client.request("GET", f"/api/cp/tenants/{args.id}")
    lives = lives_from_json(tenant)
    life: Life = lives[-1]
    if point is not None:
        live_then = life_at(lives, point[1])
        if live_then is None:
            raise ControlPlaneError(400, {"message": f"--at: tenant {args.id} did not exist at {point[0]} (or that "
                                                     "is older than the history of incarnations it keeps)"})
        life = live_then
    store = ReplicaStore(args.s3_bucket, args.s3_endpoint,
                         Path(args.replica_dir) if args.replica_dir else Path(args.data_dir) / "replica")
    out_dir = Path(args.to)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "data.db"
    if target.exists():
        raise ControlPlaneError(409, {"message": f"{target} already exists; choose an empty --to directory"})
    source = {"incarnation": life["incarnation"], "at": point[0] if point else "latest"}
    if not _restore_replica(store, args.id, life["incarnation"], point, out_dir):
        seed = life["seed"]
        if seed is None:
            raise ControlPlaneError(502, {"message": f"restore failed: incarnation {life['incarnation']} has no "
                                                     "replica (nothing of it was ever shipped)"})
        # Nothing of this incarnation was ever shipped (an in-place restore's start, not opened since): its
        # state at any time is its seed's.
        seed_point = _point_in_time(seed["at"])
        if not _restore_replica(store, args.id, seed["incarnation"], seed_point, out_dir):
            raise ControlPlaneError(502, {"message": f"restore failed: neither incarnation {life['incarnation']} "
                                                     f"nor its seed {seed['incarnation']} has a replica"})
        source = {"incarnation": seed["incarnation"], "at": seed_point[0]}
    partial = out_dir / ".data.db.restoring"
    problem = check_pocketbase_database(partial)
    if problem:
        partial.unlink(missing_ok=True)
        hint = "" if point else ("; the latest state of the replica fails the check: choose an earlier --at (a node "
                                 "asked to serve the tenant names the newest point that passes)")
        raise ControlPlaneError(502, {"message": f"the restored database is damaged: {problem}{hint}"})
    os.replace(partial, target)
    return {"tenantId": args.id, "path": str(target.resolve()), "bytes": target.stat().st_size,
            "at": point[0] if point else "latest", "incarnation": source["incarnation"], "replicaAt": source["at"]}


def _dispatch(client: SyncControlPlaneClient, args: argparse.Namespace) -> tuple[Any, Sequence[str] | None]:
    quotas = (("storage_quota_mb", "storageQuotaMB"), ("api_requests_quota", "apiRequestsQuota"),
              ("request_time_limit_ms", "requestTimeLimitMs"), ("durability", "durability"))
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
    if args.action == "restore" and not args.to:
        return restore_in_place(client, args), RESTORED_COLUMNS
    if args.action == "restore":
        return restore_tenant(client, args), ("tenantId", "path", "bytes", "at", "incarnation")
    if args.action == "move":
        return client.request("POST", f"/api/cp/tenants/{args.id}/move", {"nodeId": args.node_id}), TENANT_COLUMNS
    raise AssertionError(f"unhandled action {args.action!r}")
