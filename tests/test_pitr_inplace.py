"""In-place point-in-time restore of a tenant (``POST /api/cp/tenants/{id}/restore``, ``pbfast tenant restore
ID --at T``): the registry command, the choice of the seed, validation, the control plane's flow against a
scripted tenant node, and end to end on a real ``pbfast serve``."""

from __future__ import annotations

import copy
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import apsw
import httpx
import jsonschema
import pytest

from cpcluster import ADMIN, ADMIN_TOKEN, CLUSTER, CLUSTER_TOKEN, Member, Start, start_cluster, wait_until
from helpers import PbfastProcess, free_port

from pbfast.control_plane.registry import MAX_INCARNATION_HISTORY, Registry
from pbfast.control_plane.validation import parse_restore
from pbfast.http import ApiError
from pbfast.incarnations import life_at, lives_from_json, lives_json, lives_of
from pbfast.timefmt import format_rfc3339, parse_rfc3339

CREATED = 1_800_000_000.0  # 2027-01-15T08:00:00Z


# ---- the registry command -------------------------------------------------------------------------------


def registry_with(tenant_id: str = "acme", created: float = CREATED, **extra: Any) -> Registry:
    registry = Registry()
    registry.register_node("n1", "http://127.0.0.1:9", 10, created, _doApply=True)
    record = {"id": tenant_id, "storageQuotaMB": None, "apiRequestsQuota": None, "durability": "async",
              "status": "active", "nodeId": "n1", "moving": None, "incarnation": "inc-1", "superuser": None,
              "usage": {"apiRequests": 0, "periodStart": 0, "storageBytes": 0}, "createdAt": created,
              "updatedAt": created, **extra}
    outcome, _ = registry.create_tenant(record, _doApply=True)
    assert outcome == "ok"
    return registry


def test_restore_command_starts_a_new_incarnation_and_keeps_the_old_one_in_history() -> None:
    registry = registry_with()
    routes_before = registry.routes_version
    registry.set_moving("acme", "n1", 1, _doApply=True)
    outcome, tenant = registry.restore_tenant("acme", 1, "inc-2", {"incarnation": "inc-1", "at": "2027-01-15T08:00:05Z"},
                                              CREATED + 60, _doApply=True)
    assert outcome == "ok", tenant
    assert tenant["incarnation"] == "inc-2" and tenant["incarnationStartedAt"] == CREATED + 60
    assert tenant["seed"] == {"incarnation": "inc-1", "at": "2027-01-15T08:00:05Z"}
    assert tenant["history"] == [{"incarnation": "inc-1", "startedAt": CREATED, "endedAt": CREATED + 60, "seed": None}]
    assert (tenant["epoch"], tenant["nodeId"], tenant["moving"], tenant["updatedAt"]) == (2, "n1", None, CREATED + 60)
    assert registry.routes_version > routes_before
    assert registry.tenant("acme") == tenant

    outcome, tenant = registry.restore_tenant("acme", 2, "inc-3", {"incarnation": "inc-1", "at": "2027-01-15T08:00:01Z"},
                                              CREATED + 120, _doApply=True)
    assert outcome == "ok"
    assert [h["incarnation"] for h in tenant["history"]] == ["inc-1", "inc-2"]
    assert tenant["history"][1] == {"incarnation": "inc-2", "startedAt": CREATED + 60, "endedAt": CREATED + 120,
                                    "seed": {"incarnation": "inc-1", "at": "2027-01-15T08:00:05Z"}}


def test_restore_command_refuses_a_stale_epoch_an_unknown_tenant_and_a_reused_incarnation() -> None:
    registry = registry_with()
    seed = {"incarnation": "inc-1", "at": "2027-01-15T08:00:05Z"}
    before = copy.deepcopy(registry.tenant("acme"))
    assert registry.restore_tenant("acme", 7, "inc-2", seed, CREATED + 1, _doApply=True)[0] == "conflict"
    assert registry.restore_tenant("nope", 1, "inc-2", seed, CREATED + 1, _doApply=True)[0] == "not_found"
    assert registry.restore_tenant("acme", 1, "inc-1", seed, CREATED + 1, _doApply=True)[0] == "invalid"
    assert registry.tenant("acme") == before
    assert registry.restore_tenant("acme", 1, "inc-2", seed, CREATED + 1, _doApply=True)[0] == "ok"
    assert registry.restore_tenant("acme", 2, "inc-1", seed, CREATED + 2, _doApply=True)[0] == "invalid"


def test_restore_command_is_deterministic_and_bounds_the_history() -> None:
    """Applied to two members from the same commands, the states are identical (what Raft relies on)."""
    members = [registry_with(), registry_with()]
    for member in members:
        for n in range(MAX_INCARNATION_HISTORY + 5):
            outcome, _ = member.restore_tenant("acme", 1 + n, f"inc-{n + 2}",
                                               {"incarnation": "inc-1", "at": "2027-01-15T08:00:05Z"},
                                               CREATED + 10 * (n + 1), _doApply=True)
            assert outcome == "ok"
    first, second = (m.tenant("acme") for m in members)
    assert pickle.dumps(first) == pickle.dumps(second)
    assert first is not None and len(first["history"]) == MAX_INCARNATION_HISTORY
    assert first["history"][-1]["incarnation"] == f"inc-{MAX_INCARNATION_HISTORY + 5}"
    assert first["history"][0]["incarnation"] == "inc-6"  # the oldest ones fell off
    assert first["epoch"] == MAX_INCARNATION_HISTORY + 6


def test_records_from_before_in_place_restores_have_one_life_since_creation() -> None:
    registry = registry_with()
    tenant = registry.tenant("acme")
    assert tenant is not None and "history" not in tenant and "incarnationStartedAt" not in tenant
    lives = lives_of(tenant)
    assert lives == [{"incarnation": "inc-1", "startedAt": CREATED, "endedAt": None, "seed": None}]
    outcome, restored = registry.restore_tenant("acme", 1, "inc-2", {"incarnation": "inc-1", "at": "x"},
                                                CREATED + 30, _doApply=True)
    assert outcome == "ok" and restored["history"][0]["startedAt"] == CREATED


def test_the_life_at_a_time_and_its_json_round_trip() -> None:
    registry = registry_with()
    registry.restore_tenant("acme", 1, "inc-2", {"incarnation": "inc-1", "at": "2027-01-15T08:00:05Z"},
                            CREATED + 60.25, _doApply=True)
    registry.restore_tenant("acme", 2, "inc-3", {"incarnation": "inc-1", "at": "2027-01-15T08:00:01Z"},
                            CREATED + 120.5, _doApply=True)
    tenant = registry.tenant("acme")
    assert tenant is not None
    lives = lives_of(tenant)
    picks = {moment: (life or {}).get("incarnation") for moment in
             (CREATED - 1, CREATED, CREATED + 60.2, CREATED + 60.25, CREATED + 120.49, CREATED + 120.5, CREATED + 9e5)
             for life in [life_at(lives, moment)]}
    assert picks == {CREATED - 1: None, CREATED: "inc-1", CREATED + 60.2: "inc-1", CREATED + 60.25: "inc-2",
                     CREATED + 120.49: "inc-2", CREATED + 120.5: "inc-3", CREATED + 9e5: "inc-3"}
    as_json = lives_json(tenant)
    assert as_json[1] == {"incarnation": "inc-2", "startedAt": "2027-01-15T08:01:00.250000Z",
                          "endedAt": "2027-01-15T08:02:00.500000Z",
                          "restoredFrom": {"incarnation": "inc-1", "at": "2027-01-15T08:00:05Z"}}
    assert as_json[2]["endedAt"] is None
    read_back = lives_from_json({"incarnation": "inc-3", "incarnations": as_json})
    assert [(life["incarnation"], life["seed"]) for life in read_back] == [(life["incarnation"], life["seed"]) for life in lives]
    assert all(abs(a["startedAt"] - b["startedAt"]) < 1e-5 for a, b in zip(read_back, lives, strict=True))
    # A control plane from before in-place restores: one incarnation, whatever the time.
    assert lives_from_json({"incarnation": "old"})[0]["incarnation"] == "old"
    assert life_at(lives_from_json({"incarnation": "old"}), 0.0) is not None


# ---- validation of the point in time --------------------------------------------------------------------


@pytest.mark.parametrize(("body", "code"), [
    ({}, "validation_required"),
    ({"at": ""}, "validation_required"),
    ({"at": None}, "validation_required"),
    ({"at": 1800000000}, "validation_invalid_type"),
    ({"at": "yesterday"}, "validation_invalid_datetime"),
    ({"at": "2027-01-15"}, "validation_invalid_datetime"),
    ({"at": "2027-01-15T08:00:00"}, "validation_invalid_datetime"),  # RFC 3339 needs an offset
    ({"at": "2027-02-30T08:00:00Z"}, "validation_invalid_datetime"),
    ({"at": "2027-01-15T08:00:00+25:00"}, "validation_invalid_datetime"),
    ({"at": "2027-01-15T07:59:59Z"}, "validation_min_date_constraint"),  # before the tenant was created
    ({"at": "2027-01-15T09:00:00.000001Z"}, "validation_max_date_constraint"),  # after "now"
])
def test_restore_point_validation(body: dict[str, Any], code: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_restore(body, CREATED, CREATED + 3600)
    error = caught.value
    assert error.status == 400 and error.message == "Failed to validate the submitted data."
    assert error.data["at"]["code"] == code and error.data["at"]["message"]


def test_restore_point_is_normalised_to_utc() -> None:
    now = CREATED + 3600
    assert parse_restore({"at": "2027-01-15T09:30:00+01:00"}, CREATED, now) == ("2027-01-15T08:30:00Z", CREATED + 1800)
    assert parse_restore({"at": "2027-01-15t08:00:00.25z"}, CREATED, now) == ("2027-01-15T08:00:00.250000Z",
                                                                            CREATED + 0.25)
    assert parse_restore({"at": "2027-01-15T08:00:00.1234567891Z"}, CREATED, now)[0] == "2027-01-15T08:00:00.123456Z"
    with pytest.raises(ApiError) as caught:
        parse_restore({"at": "2027-01-15T08:10:00Z", "nodeId": "n1"}, CREATED, now)
    assert caught.value.data == {"nodeId": {"code": "validation_unknown_field", "message": "Unknown field."}}


# ---- the control plane's flow against a scripted tenant node ----------------------------------------------


@dataclass
class ScriptedNode:
    """A tenant node played by the test: answers restore checks and releases as scripted, records calls,
    and keeps its registration alive with heartbeats (the last answer is kept: the node's assignments)."""

    cp_url: str
    node_id: str = "n1"
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    check_answers: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    release_answers: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    release_gate: threading.Event = field(default_factory=threading.Event)
    assignments: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.release_gate.set()
        node = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                assert self.headers["authorization"] == f"Bearer {CLUSTER_TOKEN}"
                parts = self.path.strip("/").split("/")  # api node tenants {id} {action}
                node.calls.append((parts[4], parts[3], body))
                if parts[4] == "release":
                    node.release_gate.wait(30)
                answers = node.check_answers if parts[4] == "restore-check" else node.release_answers
                status, payload = answers.pop(0) if answers else (200, {"bytes": 4096} if parts[4] != "release" else {})
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        response = httpx.put(f"{self.cp_url}/api/cp/nodes/{self.node_id}", headers=CLUSTER,
                             json={"address": self.address, "maxTenants": 100})
        assert response.status_code == 200, response.text
        self._stop = threading.Event()
        threading.Thread(target=self._heartbeat, daemon=True).start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(0.3):
            try:
                response = httpx.post(f"{self.cp_url}/api/cp/nodes/{self.node_id}/heartbeat", headers=CLUSTER,
                                      json={"openTenants": 0}, timeout=2)
            except httpx.TransportError:
                continue
            if response.status_code == 200:
                self.assignments = response.json()

    def close(self) -> None:
        self._stop.set()
        self.release_gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def cp(pbfast_process: Start, tmp_path: Path) -> Member:
    return start_cluster(pbfast_process, tmp_path, 1)[0]


@pytest.fixture
def node(cp: Member) -> Iterator[ScriptedNode]:
    scripted = ScriptedNode(cp.url)
    yield scripted
    scripted.close()


def get_tenant(cp: Member, tenant_id: str) -> dict[str, Any]:
    response = httpx.get(f"{cp.url}/api/cp/tenants/{tenant_id}", headers=ADMIN)
    assert response.status_code == 200, response.text
    return dict(response.json())


def restore(cp: Member, tenant_id: str, body: Any, headers: dict[str, str] = ADMIN) -> httpx.Response:
    return httpx.post(f"{cp.url}/api/cp/tenants/{tenant_id}/restore", headers=headers, json=body, timeout=30)


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"status", "message", "data"} and body["status"] == status and body["message"]
    return dict(body)


def iso(moment: float) -> str:
    return format_rfc3339(moment)


def matches_openapi(cp: Member, response: httpx.Response) -> None:
    document = httpx.get(f"{cp.url}/api/cp/openapi.json", headers=ADMIN).json()
    answer = document["paths"]["/api/cp/tenants/{id}/restore"]["post"]["responses"][str(response.status_code)]
    if "$ref" in answer:
        answer = document["components"]["responses"][answer["$ref"].rsplit("/", 1)[-1]]
    schema = answer["content"]["application/json"]["schema"]
    jsonschema.validate(response.json(), {"$ref": "#/x", "x": schema, "components": document["components"]})


def test_invalid_restores_get_pocketbase_errors_and_change_nothing(cp: Member, node: ScriptedNode) -> None:
    created = httpx.post(f"{cp.url}/api/cp/tenants", headers=ADMIN, json={"id": "acme"})
    assert created.status_code == 200 and created.json()["nodeId"] == "n1", created.text
    before = get_tenant(cp, "acme")
    assert before["restoredFrom"] is None and [i["incarnation"] for i in before["incarnations"]] == [before["incarnation"]]
    cases = [
        ({}, "validation_required"),
        ({"at": "last tuesday"}, "validation_invalid_datetime"),
        ({"at": iso(time.time() + 3600)}, "validation_max_date_constraint"),
        ({"at": "2020-01-01T00:00:00Z"}, "validation_min_date_constraint"),
        ({"at": iso(time.time()), "force": True}, "validation_unknown_field"),
    ]
    for body, code in cases:
        error = assert_error(restore(cp, "acme", body), 400)
        assert error["message"] == "Failed to validate the submitted data."
        assert any(problem["code"] == code for problem in error["data"].values()), error
    matches_openapi(cp, restore(cp, "acme", {}))
    assert_error(restore(cp, "nope", {"at": iso(time.time())}), 404)
    assert_error(restore(cp, "acme", {"at": iso(time.time())}, headers=CLUSTER), 403)
    assert_error(restore(cp, "acme", {"at": iso(time.time())}, headers={}), 401)
    assert node.calls == []
    assert get_tenant(cp, "acme") == before


def test_a_refused_trial_or_release_changes_nothing(cp: Member, node: ScriptedNode) -> None:
    tenant = httpx.post(f"{cp.url}/api/cp/tenants", headers=ADMIN, json={"id": "acme"}).json()
    time.sleep(0.05)
    at = iso(time.time())

    node.check_answers.append((400, {"status": 400, "message": "The replica holds no state then.", "data": {}}))
    error = assert_error(restore(cp, "acme", {"at": at}), 400)
    assert "The replica holds no state then." in error["message"] and error["data"]["at"]["code"]
    node.check_answers.append((500, {"status": 500, "message": "S3 said no.", "data": {}}))
    error = assert_error(restore(cp, "acme", {"at": at}), 503)
    assert "S3 said no." in error["message"]
    assert [call[0] for call in node.calls] == ["restore-check", "restore-check"]  # no release was asked for
    assert node.calls[0][2] == {"incarnation": tenant["incarnation"], "at": at}

    node.release_answers.append((503, {"status": 503, "message": "Not shipped yet.", "data": {}}))
    error = assert_error(restore(cp, "acme", {"at": at}), 503)
    assert "could not hand the tenant over" in error["message"]
    assert node.calls[-1] == ("release", "acme", {"epoch": 1})
    after = get_tenant(cp, "acme")
    assert after == {**tenant, "updatedAt": after["updatedAt"], "usage": after["usage"]}
    assert (after["epoch"], after["moving"], after["incarnation"]) == (1, None, tenant["incarnation"])


def test_restore_in_place_flow(cp: Member, node: ScriptedNode) -> None:
    first = httpx.post(f"{cp.url}/api/cp/tenants", headers=ADMIN, json={"id": "acme"}).json()
    time.sleep(0.3)
    early = iso(time.time() - 0.2)
    response = restore(cp, "acme", {"at": early.replace("Z", "+00:00")})
    assert response.status_code == 200, response.text
    matches_openapi(cp, response)
    second = response.json()
    assert second["incarnation"] != first["incarnation"]
    assert (second["epoch"], second["nodeId"], second["moving"]) == (2, "n1", None)
    assert second["restoredFrom"] == {"incarnation": first["incarnation"], "at": early}
    assert [i["incarnation"] for i in second["incarnations"]] == [first["incarnation"], second["incarnation"]]
    assert second["incarnations"][0]["endedAt"] == second["incarnations"][1]["startedAt"]
    assert node.calls == [("restore-check", "acme", {"incarnation": first["incarnation"], "at": early}),
                          ("release", "acme", {"epoch": 1})]
    assert get_tenant(cp, "acme") == second
    # The node learns the seed with its assignment.
    spec = wait_until(lambda: node.assignments.get("tenants", {}).get("acme", {}).get("epoch") == 2
                      and node.assignments["tenants"]["acme"])
    assert spec["incarnation"] == second["incarnation"]
    assert spec["seed"] == {"incarnation": first["incarnation"], "at": early}

    # A time in the new incarnation whose replica has nothing yet: its seed is the state then.
    node.calls.clear()
    node.check_answers.append((400, {"status": 400, "message": "No replica of that incarnation.", "data": {}}))
    now = iso(time.time())
    third = restore(cp, "acme", {"at": now}).json()
    assert node.calls[:2] == [("restore-check", "acme", {"incarnation": second["incarnation"], "at": now}),
                              ("restore-check", "acme", {"incarnation": first["incarnation"], "at": early})]
    assert third["restoredFrom"] == second["restoredFrom"] and third["epoch"] == 3

    # Back into the first incarnation, before the first restore.
    node.calls.clear()
    before_first_restore = parse_rfc3339(second["incarnations"][0]["endedAt"]).timestamp() - 0.1
    fourth = restore(cp, "acme", {"at": iso(before_first_restore)}).json()
    assert fourth["restoredFrom"]["incarnation"] == first["incarnation"], fourth
    assert node.calls[0][2]["incarnation"] == first["incarnation"]
    assert [i["incarnation"] for i in fourth["incarnations"]] == [
        first["incarnation"], second["incarnation"], third["incarnation"], fourth["incarnation"]]
    assert fourth["epoch"] == 4


def test_a_moving_or_unplaced_tenant_is_not_restored(cp: Member) -> None:
    lonely = httpx.post(f"{cp.url}/api/cp/tenants", headers=ADMIN, json={"id": "lonely"}).json()
    assert lonely["nodeId"] is None
    started = time.monotonic()
    assert_error(restore(cp, "lonely", {"at": iso(time.time())}), 503)
    assert time.monotonic() - started >= 4  # it waited for a placement first

    first, second = ScriptedNode(cp.url, "n1"), ScriptedNode(cp.url, "n2")
    try:
        placed = wait_until(lambda: get_tenant(cp, "lonely")["nodeId"])
        source = first if placed == "n1" else second
        source.release_gate.clear()  # the move below waits in the release until the gate opens
        target = "n2" if placed == "n1" else "n1"
        moved: list[httpx.Response] = []
        mover = threading.Thread(target=lambda: moved.append(httpx.post(
            f"{cp.url}/api/cp/tenants/lonely/move", headers=ADMIN, json={"nodeId": target}, timeout=30)))
        mover.start()
        wait_until(lambda: get_tenant(cp, "lonely")["moving"] == target)
        error = assert_error(restore(cp, "lonely", {"at": iso(time.time())}), 409)
        assert "moving" in error["message"]
        source.release_gate.set()
        mover.join(30)
        assert moved and moved[0].status_code == 200, moved
        assert all(call[0] == "release" for call in first.calls + second.calls)  # no trial restore was made
    finally:
        first.close()
        second.close()


def pbfast_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pbfast", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PBFAST_ADMIN_TOKEN": ADMIN_TOKEN})


def test_the_cli_restores_in_place(cp: Member, node: ScriptedNode) -> None:
    addr = f"--control-plane-addrs={cp.url.removeprefix('http://')}"
    first = httpx.post(f"{cp.url}/api/cp/tenants", headers=ADMIN, json={"id": "acme"}).json()
    time.sleep(1.1)
    usage = pbfast_cli("tenant", "restore", "acme", addr)
    assert usage.returncode == 2 and "--at TIMESTAMP is required" in usage.stderr
    bad = pbfast_cli("tenant", "restore", "acme", "--at=yesterday", addr)
    assert bad.returncode == 1 and "RFC 3339" in bad.stderr
    future = pbfast_cli("tenant", "restore", "acme", "--at=2999-01-01T00:00:00Z", addr)
    assert future.returncode == 1 and "400" in future.stderr and "validation_max_date_constraint" in future.stderr
    assert node.calls == []

    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")  # no offset: UTC, as before
    done = pbfast_cli("tenant", "restore", "acme", f"--at={at}", addr)
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.strip().splitlines()
    assert header.split()[:4] == ["ID", "STATUS", "NODEID", "EPOCH"] and "INCARNATION" in header.split()
    tenant = get_tenant(cp, "acme")
    assert row.split()[:4] == ["acme", "active", "n1", "2"] and tenant["incarnation"] in row.split()
    assert tenant["restoredFrom"] == {"incarnation": first["incarnation"], "at": at + "Z"}
    assert node.calls[0] == ("restore-check", "acme", {"incarnation": first["incarnation"], "at": at + "Z"})

    node.check_answers.append((400, {"status": 400, "message": "The replica holds no state then.", "data": {}}))
    refused = pbfast_cli("tenant", "restore", "acme", f"--at={at}Z", addr, "--json")
    assert refused.returncode == 1 and "holds no state" in refused.stderr
    assert get_tenant(cp, "acme")["epoch"] == 2


# ---- end to end: a real pbfast, its node and Litestream --------------------------------------------------


OWNER = {"email": "owner@example.com", "password": "owner-password-1"}


@dataclass
class Deployment:
    """pbfast all-in-one, or a control plane, a tenant node and a gateway as three processes (the control
    plane then reaches the node over HTTP); local replica directory either way. Same ports on every start."""

    kind: str
    start: Start
    root: Path
    ports: dict[str, int] = field(default_factory=lambda: {name: free_port() for name in ("cp", "gw", "raft", "node")})
    processes: list[PbfastProcess] = field(default_factory=list)

    @property
    def cp(self) -> str:
        return f"http://127.0.0.1:{self.ports['cp']}"

    @property
    def gw(self) -> str:
        return f"http://127.0.0.1:{self.ports['gw']}"

    @property
    def node_dir(self) -> Path:
        return self.root if self.kind == "all-in-one" else self.root / "node-a"

    def up(self) -> None:
        ports = self.ports
        if self.kind == "all-in-one":
            process = self.start(["serve", f"--data-dir={self.root}", f"--http-addr=127.0.0.1:{ports['cp']}",
                                  f"--gateway-addr=127.0.0.1:{ports['gw']}", f"--raft-bind-addr=127.0.0.1:{ports['raft']}",
                                  f"--admin-token={ADMIN_TOKEN}"])
            process.wait_healthy([self.cp, self.gw], timeout=30)
            self.processes = [process]
            return
        cp = self.start(["serve", "--mode=control-plane", "--node-id=cp1", f"--http-addr=127.0.0.1:{ports['cp']}",
                         f"--raft-bind-addr=127.0.0.1:{ports['raft']}", f"--data-dir={self.root / 'cp1'}",
                         f"--admin-token={ADMIN_TOKEN}", f"--cluster-token={CLUSTER_TOKEN}"])
        cp.wait_healthy([self.cp], timeout=30)
        node = self.start(["serve", "--mode=tenant-node", "--node-id=node-a", f"--http-addr=127.0.0.1:{ports['node']}",
                           f"--control-plane-addrs=127.0.0.1:{ports['cp']}", f"--cluster-token={CLUSTER_TOKEN}",
                           f"--data-dir={self.node_dir}"])
        node.wait_healthy([f"http://127.0.0.1:{ports['node']}"], timeout=30)
        gateway = self.start(["serve", "--mode=gateway", f"--http-addr=127.0.0.1:{ports['gw']}",
                              f"--control-plane-addrs=127.0.0.1:{ports['cp']}", f"--cluster-token={CLUSTER_TOKEN}"])
        gateway.wait_healthy([self.gw], timeout=30)
        self.processes = [cp, node, gateway]

    def down(self, sig: int = signal.SIGTERM) -> None:
        for process in reversed(self.processes):
            process.stop(sig)
        self.processes = []

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return pbfast_cli(*args, f"--control-plane-addrs=127.0.0.1:{self.ports['cp']}",
                          f"--replica-dir={self.node_dir / 'replica'}", timeout=120)


class Notes:
    """The tenant's ``notes`` records through the gateway, as its superuser."""

    def __init__(self, gw: str, tenant_id: str) -> None:
        self.base = f"{gw}/t/{tenant_id}/api"
        self.token = ""
        deadline = time.monotonic() + 30
        while not self.token:
            response = httpx.post(f"{self.base}/collections/_superusers/auth-with-password", timeout=30,
                                  json={"identity": OWNER["email"], "password": OWNER["password"]})
            if response.status_code == 200:
                self.token = response.json()["token"]
            else:
                assert time.monotonic() < deadline, response.text
                time.sleep(0.1)

    def create_collection(self) -> None:
        response = httpx.post(f"{self.base}/collections", headers={"Authorization": self.token}, timeout=30,
                              json={"name": "notes", "type": "base", "fields": [{"name": "n", "type": "number"}]})
        assert response.status_code == 200, response.text

    def write(self, first: int, count: int) -> set[str]:
        written = set()
        with httpx.Client(headers={"Authorization": self.token}, timeout=30) as client:
            for n in range(first, first + count):
                response = client.post(f"{self.base}/collections/notes/records", json={"n": n})
                assert response.status_code == 200, response.text
                written.add(response.json()["id"])
        return written

    def ids(self) -> set[str]:
        """The records served now, waiting while the tenant is held (503: restoring, released, moving)."""
        deadline = time.monotonic() + 30
        while True:
            response = httpx.get(f"{self.base}/collections/notes/records?perPage=500",
                                 headers={"Authorization": self.token}, timeout=30)
            if response.status_code == 200:
                return {item["id"] for item in response.json()["items"]}
            assert response.status_code == 503 and time.monotonic() < deadline, response.text
            time.sleep(0.1)


def now_rfc3339() -> str:
    return format_rfc3339(time.time())


def count_notes(data_dir: Path) -> int:
    connection = apsw.Connection(str(data_dir / "data.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return int(connection.execute("SELECT COUNT(*) FROM notes").fetchone()[0])
    finally:
        connection.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["all-in-one", "separate-processes"])
def test_restore_in_place_end_to_end(pbfast_process: Start, tmp_path: Path, kind: str) -> None:
    deployment = Deployment(kind, pbfast_process, tmp_path / "pbfast")
    deployment.up()
    # Durable: every acknowledged write is in the replica, so the timeline below has no shipping delay.
    created = httpx.post(f"{deployment.cp}/api/cp/tenants", headers=ADMIN,
                         json={"id": "history", "superuser": OWNER, "durability": "sync"})
    assert created.status_code == 200, created.text
    first_incarnation = created.json()["incarnation"]
    notes = Notes(deployment.gw, "history")
    time.sleep(1.2)  # the node learns the tenant's durability with its next heartbeat
    notes.create_collection()
    before = notes.write(0, 5)
    time.sleep(1.5)
    between = now_rfc3339()
    time.sleep(1.5)
    after = notes.write(100, 5)
    time.sleep(1.5)
    just_before_restore = now_rfc3339()  # after the last write of the first incarnation
    time.sleep(1.0)
    assert notes.ids() == before | after

    restored = deployment.cli("tenant", "restore", "history", f"--at={between}")
    assert restored.returncode == 0, restored.stderr
    tenant = httpx.get(f"{deployment.cp}/api/cp/tenants/history", headers=ADMIN).json()
    assert tenant["restoredFrom"] == {"incarnation": first_incarnation, "at": between}
    assert tenant["incarnation"] != first_incarnation and tenant["incarnation"] in restored.stdout
    second_incarnation = tenant["incarnation"]
    assert notes.ids() == before  # exactly the records from before T

    # The new incarnation's replica may hold nothing yet: --to reads its seed then; either way, T's state.
    copied = deployment.cli("tenant", "restore", "history", f"--to={tmp_path / 'latest-after-restore'}")
    assert copied.returncode == 0, copied.stderr
    assert count_notes(tmp_path / "latest-after-restore") == len(before)

    later = notes.write(200, 3)
    assert notes.ids() == before | later

    deployment.down()
    deployment.up()
    assert notes.ids() == before | later
    # Losing the node's disk: the tenant comes back from the new incarnation's own replica.
    time.sleep(1.5)
    deployment.down(signal.SIGKILL)
    shutil.rmtree(deployment.node_dir / "tenants")
    deployment.up()
    assert notes.ids() == before | later

    # Undo: back to just before the first restore, a time in the first incarnation after its last write.
    undone = deployment.cli("tenant", "restore", "history", f"--at={just_before_restore}", "--json")
    assert undone.returncode == 0, undone.stderr
    tenant = json.loads(undone.stdout)
    assert tenant["restoredFrom"] == {"incarnation": first_incarnation, "at": just_before_restore}
    assert [i["incarnation"] for i in tenant["incarnations"]][:2] == [first_incarnation, second_incarnation]
    assert len(tenant["incarnations"]) == 3 and tenant["epoch"] == created.json()["epoch"] + 2
    assert notes.ids() == before | after
    assert len(notes.write(300, 2) - before - after) == 2

    # Copies of past states come from the incarnation that was live then.
    for name, at, expected in (("t1", between, len(before)), ("t2", just_before_restore, len(before | after))):
        past = deployment.cli("tenant", "restore", "history", f"--to={tmp_path / name}", f"--at={at}", "--json")
        assert past.returncode == 0, past.stderr
        assert json.loads(past.stdout)["incarnation"] == first_incarnation
        assert count_notes(tmp_path / name) == expected
    in_second = deployment.cli("tenant", "restore", "history", f"--to={tmp_path / 't3'}", f"--at={now_rfc3339()}")
    assert in_second.returncode == 0, in_second.stderr
    assert count_notes(tmp_path / "t3") == len(before | after) + 2


@pytest.mark.timeout(180)
def test_restore_to_a_time_in_an_incarnation_without_a_replica_yet(pbfast_process: Start, tmp_path: Path) -> None:
    """Right after an in-place restore, before anything opened the tenant, its new incarnation has no replica:
    its state at any time since is its seed's, and a restore to such a time starts from that seed."""
    deployment = Deployment("all-in-one", pbfast_process, tmp_path / "pbfast")
    deployment.up()
    created = httpx.post(f"{deployment.cp}/api/cp/tenants", headers=ADMIN,
                         json={"id": "twice", "superuser": OWNER, "durability": "sync"})
    assert created.status_code == 200, created.text
    notes = Notes(deployment.gw, "twice")
    time.sleep(1.2)  # the node learns the tenant's durability with its next heartbeat
    notes.create_collection()
    before = notes.write(0, 4)
    time.sleep(1.5)
    between = now_rfc3339()
    time.sleep(1.5)
    notes.write(100, 4)
    time.sleep(1.0)
    first = deployment.cli("tenant", "restore", "twice", f"--at={between}", "--json")
    assert first.returncode == 0, first.stderr
    seed = json.loads(first.stdout)["restoredFrom"]
    assert seed == {"incarnation": created.json()["incarnation"], "at": between}
    time.sleep(0.5)
    again = deployment.cli("tenant", "restore", "twice", f"--at={now_rfc3339()}", "--json")
    assert again.returncode == 0, again.stderr
    tenant = json.loads(again.stdout)
    assert tenant["restoredFrom"] == seed and len(tenant["incarnations"]) == 3
    assert notes.ids() == before
