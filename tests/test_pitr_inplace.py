"""In-place point-in-time restore of a tenant (``POST /api/cp/tenants/{id}/restore``, ``pbfast tenant restore
ID --at T``): the registry command, the choice of the seed, validation, the control plane's flow against a
scripted tenant node, and end to end on a real ``pbfast serve``."""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import pickle
import shutil
import signal
import socket
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

from pbfast import operator_cli
from pbfast.control_plane import handover_api as api_module
from pbfast.control_plane.api import ControlPlaneApi
from pbfast.control_plane.node_client import RESTORE_CHECK_TIMEOUT_SECONDS, NodeError
from pbfast.control_plane.raft import CommandFailed
from pbfast.control_plane.reconciler import STALE_MOVE_SECONDS, Reconciler
from pbfast.control_plane.registry import MAX_INCARNATION_HISTORY, Registry
from pbfast.control_plane.validation import parse_restore
from pbfast.cp_client import ControlPlaneError
from pbfast.http import ApiError
from pbfast.operator_cli import RESTORE_REQUEST_TIMEOUT_SECONDS
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
    outcome, tenant = registry.update_tenant_with_new_incarnation("acme", 1, "inc-2", {"incarnation": "inc-1", "at": "2027-01-15T08:00:05Z"},
                                              CREATED + 60, _doApply=True)
    assert outcome == "ok", tenant
    assert tenant["incarnation"] == "inc-2" and tenant["incarnationStartedAt"] == CREATED + 60
    assert tenant["seed"] == {"incarnation": "inc-1", "at": "2027-01-15T08:00:05Z"}
    assert tenant["history"] == [{"incarnation": "inc-1", "startedAt": CREATED, "endedAt": CREATED + 60, "seed": None}]
    assert (tenant["epoch"], tenant["nodeId"], tenant["moving"], tenant["updatedAt"]) == (2, "n1", None, CREATED + 60)
    assert registry.routes_version > routes_before
    assert registry.tenant("acme") == tenant

    outcome, tenant = registry.update_tenant_with_new_incarnation("acme", 2, "inc-3", {"incarnation": "inc-1", "at": "2027-01-15T08:00:01Z"},
                                              CREATED + 120, _doApply=True)
    assert outcome == "ok"
    assert [h["incarnation"] for h in tenant["history"]] == ["inc-1", "inc-2"]
    assert tenant["history"][1] == {"incarnation": "inc-2", "startedAt": CREATED + 60, "endedAt": CREATED + 120,
                                    "seed": {"incarnation": "inc-1", "at": "2027-01-15T08:00:05Z"}}


def test_restore_command_refuses_a_stale_epoch_an_unknown_tenant_and_a_reused_incarnation() -> None:
    registry = registry_with()
    seed = {"incarnation": "inc-1", "at": "2027-01-15T08:00:05Z"}
    before = copy.deepcopy(registry.tenant("acme"))
    assert registry.update_tenant_with_new_incarnation("acme", 7, "inc-2", seed, CREATED + 1, _doApply=True)[0] == "conflict"
    assert registry.update_tenant_with_new_incarnation("nope", 1, "inc-2", seed, CREATED + 1, _doApply=True)[0] == "not_found"
    assert registry.update_tenant_with_new_incarnation("acme", 1, "inc-1", seed, CREATED + 1, _doApply=True)[0] == "invalid"
    assert registry.tenant("acme") == before
    assert registry.update_tenant_with_new_incarnation("acme", 1, "inc-2", seed, CREATED + 1, _doApply=True)[0] == "ok"
    assert registry.update_tenant_with_new_incarnation("acme", 2, "inc-1", seed, CREATED + 2, _doApply=True)[0] == "invalid"


def test_restore_command_is_deterministic_and_bounds_the_history() -> None:
    """Applied to two members from the same commands, the states are identical (what Raft relies on)."""
    members = [registry_with(), registry_with()]
    for member in members:
        for n in range(MAX_INCARNATION_HISTORY + 5):
            outcome, _ = member.update_tenant_with_new_incarnation("acme", 1 + n, f"inc-{n + 2}",
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
    outcome, restored = registry.update_tenant_with_new_incarnation("acme", 1, "inc-2", {"incarnation": "inc-1", "at": "x"},
                                                CREATED + 30, _doApply=True)
    assert outcome == "ok" and restored["history"][0]["startedAt"] == CREATED


def test_the_life_at_a_time_and_its_json_round_trip() -> None:
    registry = registry_with()
    registry.update_tenant_with_new_incarnation("acme", 1, "inc-2", {"incarnation": "inc-1", "at": "2027-01-15T08:00:05Z"},
                            CREATED + 60.25, _doApply=True)
    registry.update_tenant_with_new_incarnation("acme", 2, "inc-3", {"incarnation": "inc-1", "at": "2027-01-15T08:00:01Z"},
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
    release_answers: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # status 0: no answer
    release_gate: threading.Event = field(default_factory=threading.Event)
    check_gate: threading.Event = field(default_factory=threading.Event)
    assignments: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.release_gate.set()
        self.check_gate.set()
        node = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                assert self.headers["authorization"] == f"Bearer {CLUSTER_TOKEN}"
                parts = self.path.strip("/").split("/")  # api node tenants {id} {action}
                node.calls.append((parts[4], parts[3], body))
                if parts[4] == "release":
                    node.release_gate.wait(30)
                else:
                    node.check_gate.wait(30)
                answers = node.check_answers if parts[4] == "restore-check" else node.release_answers
                status, payload = answers.pop(0) if answers else (200, {"bytes": 4096} if parts[4] != "release" else {})
                if status == 0:  # the connection is lost before any answer
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
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
        self.check_gate.set()
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


NO_REPLICA = {"status": 400, "message": "The tenant has no replica of that incarnation.",
              "data": {"incarnation": {"code": "validation_no_replica", "message": "Nothing of it was replicated."}}}
NO_STATE_AT = {"status": 400, "message": "Restore failed: the replica holds no state then.",
               "data": {"at": {"code": "validation_no_state_at", "message": "the replica holds no state then"}}}


def test_a_refused_release_changes_nothing(cp: Member, node: ScriptedNode) -> None:
    tenant = httpx.post(f"{cp.url}/api/cp/tenants", headers=ADMIN, json={"id": "acme"}).json()
    time.sleep(0.05)
    at = iso(time.time())
    node.release_answers.append((503, {"status": 503, "message": "Not shipped yet.", "data": {}}))
    error = assert_error(restore(cp, "acme", {"at": at}), 503)
    assert "could not hand the tenant over" in error["message"]
    assert node.calls == [("release", "acme", {"epoch": 1})]  # no trial without a release
    after = get_tenant(cp, "acme")
    assert after == {**tenant, "updatedAt": after["updatedAt"], "usage": after["usage"]}
    assert (after["epoch"], after["moving"], after["incarnation"]) == (1, None, tenant["incarnation"])


def test_a_refused_trial_puts_the_tenant_back(cp: Member, node: ScriptedNode) -> None:
    """The trial runs after the release: when it fails the tenant is placed on its node again under a new
    epoch (the node released the old one), same incarnation, and the trial's error is answered."""
    tenant = httpx.post(f"{cp.url}/api/cp/tenants", headers=ADMIN, json={"id": "acme"}).json()
    time.sleep(0.05)
    at = iso(time.time())

    node.check_answers.append((400, NO_STATE_AT))
    refused = restore(cp, "acme", {"at": at})
    error = assert_error(refused, 400)
    matches_openapi(cp, refused)
    assert "the replica holds no state then" in error["message"]
    assert error["data"]["at"]["code"] == "validation_restore_unavailable" and "restorable" in error["data"]["at"]["message"]
    assert node.calls == [("release", "acme", {"epoch": 1}),
                          ("restore-check", "acme", {"incarnation": tenant["incarnation"], "at": at})]
    after = get_tenant(cp, "acme")
    assert (after["epoch"], after["nodeId"], after["moving"], after["incarnation"]) == (2, "n1", None, tenant["incarnation"])
    assert after["restoredFrom"] is None and len(after["incarnations"]) == 1
    wait_until(lambda: node.assignments.get("tenants", {}).get("acme", {}).get("epoch") == 2)

    node.calls.clear()
    node.check_answers.append((500, {"status": 500, "message": "S3 said no.", "data": {}}))
    error = assert_error(restore(cp, "acme", {"at": at}), 503)
    assert "S3 said no." in error["message"]
    assert [call[0] for call in node.calls] == ["release", "restore-check"]
    after = get_tenant(cp, "acme")
    assert (after["epoch"], after["moving"], after["incarnation"]) == (3, None, tenant["incarnation"])


@pytest.mark.parametrize(("status", "payload"), [
    (400, {"status": 400, "message": "The restored database is unusable: no _collections.", "data": {}}),
    (400, {"status": 400, "message": "Failed to validate the submitted data.", "data": {
        "incarnation": {"code": "validation_invalid_incarnation", "message": "Must be a tenant incarnation."}}}),
    (401, {"status": 401, "message": "Missing or invalid cluster token.", "data": {}}),
    (404, {"status": 404, "message": "Not found.", "data": {}}),
    (409, {"status": 409, "message": "Busy.", "data": {}}),
])
def test_other_refusals_of_the_trial_are_the_nodes_problem(cp: Member, node: ScriptedNode, status: int,
                                                          payload: dict[str, Any]) -> None:
    """Only "no replica of that incarnation at all" falls back to the seed, and only "no state at that
    time" is the operator's 400: any other refusal (auth, route, a bad request of ours, ...) is a 503, and
    the seed is never tried for it (that would roll the tenant back further than asked)."""
    first = httpx.post(f"{cp.url}/api/cp/tenants", headers=ADMIN, json={"id": "acme"}).json()
    time.sleep(0.05)
    seeded = restore(cp, "acme", {"at": iso(time.time())}).json()  # the current incarnation has a seed now
    assert seeded["restoredFrom"]["incarnation"] == first["incarnation"]
    node.calls.clear()
    node.check_answers.append((status, payload))
    error = assert_error(restore(cp, "acme", {"at": iso(time.time())}), 503)
    assert payload["message"] in error["message"] and str(status) in error["message"]
    assert [call[0] for call in node.calls] == ["release", "restore-check"]  # the seed was not tried
    after = get_tenant(cp, "acme")
    assert (after["incarnation"], after["restoredFrom"], after["epoch"], after["moving"]) == (
        seeded["incarnation"], seeded["restoredFrom"], seeded["epoch"] + 1, None)


def test_the_seed_is_tried_only_when_the_incarnation_has_no_replica(cp: Member, node: ScriptedNode) -> None:
    """The review's case: a time in the current incarnation whose replica no longer holds it (pruned) must
    not silently become the incarnation's seed, days earlier; an incarnation without any replica is its
    seed, though, and when the seed has none either nothing is restorable."""
    first = httpx.post(f"{cp.url}/api/cp/tenants", headers=ADMIN, json={"id": "acme"}).json()
    time.sleep(0.3)
    t0 = iso(time.time() - 0.2)
    second = restore(cp, "acme", {"at": t0}).json()
    assert second["restoredFrom"] == {"incarnation": first["incarnation"], "at": t0}
    time.sleep(0.3)

    node.calls.clear()
    t1 = iso(time.time() - 0.1)
    node.check_answers.append((400, NO_STATE_AT))
    error = assert_error(restore(cp, "acme", {"at": t1}), 400)
    assert error["data"]["at"]["code"] == "validation_restore_unavailable"
    checks = [call for call in node.calls if call[0] == "restore-check"]
    assert checks == [("restore-check", "acme", {"incarnation": second["incarnation"], "at": t1})]
    assert get_tenant(cp, "acme")["incarnation"] == second["incarnation"]

    node.calls.clear()
    node.check_answers += [(400, NO_REPLICA), (400, NO_REPLICA)]
    error = assert_error(restore(cp, "acme", {"at": t1}), 400)
    assert error["data"]["at"]["code"] == "validation_restore_unavailable"
    assert [call[2]["incarnation"] for call in node.calls if call[0] == "restore-check"] == [
        second["incarnation"], first["incarnation"]]

    node.calls.clear()
    node.check_answers.append((400, NO_REPLICA))
    third = restore(cp, "acme", {"at": t1})
    assert third.status_code == 200, third.text
    assert third.json()["restoredFrom"] == {"incarnation": first["incarnation"], "at": t0}
    assert [call[2] for call in node.calls if call[0] == "restore-check"] == [
        {"incarnation": second["incarnation"], "at": t1}, {"incarnation": first["incarnation"], "at": t0}]


def test_the_trial_runs_after_the_release_while_the_tenant_is_held(cp: Member, node: ScriptedNode) -> None:
    """The old incarnation is frozen before the trial (nothing writes or prunes its replica), and the
    tenant is marked moving (not served) until the commit."""
    httpx.post(f"{cp.url}/api/cp/tenants", headers=ADMIN, json={"id": "acme"})
    time.sleep(0.05)
    node.check_gate.clear()
    answers: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: answers.append(restore(cp, "acme", {"at": iso(time.time())})))
    worker.start()
    try:
        wait_until(lambda: any(call[0] == "restore-check" for call in node.calls))
        assert node.calls[0] == ("release", "acme", {"epoch": 1})
        held = get_tenant(cp, "acme")
        assert (held["moving"], held["epoch"]) == ("n1", 1)
        route = next(r for r in httpx.get(f"{cp.url}/api/cp/routes", headers=ADMIN).json()["routes"]
                     if r["tenantId"] == "acme")
        assert route["status"] == "moving"
        other = assert_error(restore(cp, "acme", {"at": iso(time.time())}), 409)  # one flow at a time
        assert "moving" in other["message"]
    finally:
        node.check_gate.set()
        worker.join(30)
    assert answers and answers[0].status_code == 200, answers
    assert (answers[0].json()["epoch"], answers[0].json()["moving"]) == (2, None)
    assert [call[0] for call in node.calls] == ["release", "restore-check"]


def test_an_unanswered_release_puts_the_tenant_back(cp: Member, node: ScriptedNode) -> None:
    """The node may have released the tenant when its answer was lost: clearing the marker alone would
    leave it assigned under an epoch its node no longer serves."""
    tenant = httpx.post(f"{cp.url}/api/cp/tenants", headers=ADMIN, json={"id": "acme"}).json()
    time.sleep(0.05)
    node.release_answers.append((0, {}))
    error = assert_error(restore(cp, "acme", {"at": iso(time.time())}), 503)
    assert "could not hand the tenant over" in error["message"]
    assert [call[0] for call in node.calls] == ["release"]
    after = get_tenant(cp, "acme")
    assert (after["epoch"], after["nodeId"], after["moving"], after["incarnation"]) == (2, "n1", None, tenant["incarnation"])


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
    assert node.calls == [("release", "acme", {"epoch": 1}),
                          ("restore-check", "acme", {"incarnation": first["incarnation"], "at": early})]
    assert get_tenant(cp, "acme") == second
    # The node learns the seed with its assignment.
    spec = wait_until(lambda: node.assignments.get("tenants", {}).get("acme", {}).get("epoch") == 2
                      and node.assignments["tenants"]["acme"])
    assert spec["incarnation"] == second["incarnation"]
    assert spec["seed"] == {"incarnation": first["incarnation"], "at": early}

    # A time in the new incarnation whose replica has nothing yet: its seed is the state then.
    node.calls.clear()
    node.check_answers.append((400, NO_REPLICA))
    now = iso(time.time())
    third = restore(cp, "acme", {"at": now}).json()
    assert node.calls[:3] == [("release", "acme", {"epoch": 2}),
                              ("restore-check", "acme", {"incarnation": second["incarnation"], "at": now}),
                              ("restore-check", "acme", {"incarnation": first["incarnation"], "at": early})]
    assert third["restoredFrom"] == second["restoredFrom"] and third["epoch"] == 3

    # Back into the first incarnation, before the first restore.
    node.calls.clear()
    before_first_restore = parse_rfc3339(second["incarnations"][0]["endedAt"]).timestamp() - 0.1
    fourth = restore(cp, "acme", {"at": iso(before_first_restore)}).json()
    assert fourth["restoredFrom"]["incarnation"] == first["incarnation"], fourth
    assert node.calls[1][2]["incarnation"] == first["incarnation"]
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
    assert node.calls[1] == ("restore-check", "acme", {"incarnation": first["incarnation"], "at": at + "Z"})

    node.check_answers.append((400, NO_STATE_AT))
    refused = pbfast_cli("tenant", "restore", "acme", f"--at={at}Z", addr, "--json")
    assert refused.returncode == 1 and "holds no state" in refused.stderr and "400" in refused.stderr
    assert "validation_restore_unavailable" in refused.stderr
    after = get_tenant(cp, "acme")
    assert (after["epoch"], after["incarnation"], after["moving"]) == (3, tenant["incarnation"], None)


# ---- the flow in process: uncertain Raft outcomes, concurrent flows, time limits --------------------------


class LocalMember:
    """A one-member stand-in for :class:`RaftMember`: applies commands to its registry directly, each after
    a pause (so concurrent flows interleave), with scripted failures per command name: "lost" (raises
    CommandFailed, not applied) or "applied" (applied, then CommandFailed: the outcome was not reported)."""

    is_leader = True

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.faults: dict[str, list[str]] = {}
        self.submitted: list[str] = []

    async def submit(self, command: Any, *args: Any, timeout: float = 5.0) -> tuple[str, Any]:
        await asyncio.sleep(0.01)
        self.submitted.append(command.__name__)
        faults = self.faults.get(command.__name__)
        fault = faults.pop(0) if faults else None
        if fault == "lost":
            raise CommandFailed("leader changed")
        result = command(*args, _doApply=True)
        if fault == "applied":
            raise CommandFailed("leader changed after the append")
        return result  # type: ignore[no-any-return]


class LocalNodes:
    """The NodeClient of the in-process flow: releases and trials as scripted."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.check_errors: list[NodeError | None] = []
        self.check_delay = 0.0

    async def release(self, address: str, tenant_id: str, epoch: int) -> None:
        self.calls.append(("release", epoch))
        await asyncio.sleep(0.05)

    async def restore_check(self, address: str, tenant_id: str, incarnation: str, at: str,
                            timeout: float = 300.0) -> int:
        self.calls.append(("restore-check", incarnation))
        await asyncio.sleep(self.check_delay)
        error = self.check_errors.pop(0) if self.check_errors else None
        if error is not None:
            raise error
        return 4096


class LocalRequest:
    def __init__(self, tenant_id: str, body: dict[str, Any]) -> None:
        self.params = {"id": tenant_id}
        self.body = body
        self.sent: tuple[int, Any] | None = None

    async def json_object(self) -> dict[str, Any]:
        await asyncio.sleep(0)
        return dict(self.body)

    def send_json(self, status: int, payload: Any) -> None:
        self.sent = (status, payload)


def local_api(created: float) -> tuple[ControlPlaneApi, LocalMember, LocalNodes]:
    member, nodes = LocalMember(registry_with(created=created)), LocalNodes()
    return ControlPlaneApi(member, None, nodes), member, nodes  # type: ignore[arg-type]


async def call_restore(api: ControlPlaneApi, at: float) -> tuple[int, Any]:
    request = LocalRequest("acme", {"at": iso(at)})
    try:
        await api.restore_tenant(request)  # type: ignore[arg-type]
    except ApiError as err:
        return err.status, err.body()
    assert request.sent is not None
    return request.sent


def test_a_restore_committed_despite_command_failed_answers_200() -> None:
    """A leader change can make Raft report a failure for a command it appended and later committed: the
    tenant is read back after a barrier, and its new incarnation means the restore was made."""
    now = time.time()
    api, member, nodes = local_api(now - 60)
    member.faults["update_tenant_with_new_incarnation"] = ["applied"]
    status, body = asyncio.run(call_restore(api, now - 30))
    assert status == 200, body
    tenant = member.registry.tenant("acme")
    assert tenant is not None and body["incarnation"] == tenant["incarnation"] != "inc-1"
    assert (tenant["epoch"], tenant["moving"], tenant["seed"]["incarnation"]) == (2, None, "inc-1")
    assert member.submitted == ["set_moving", "update_tenant_with_new_incarnation", "barrier"]  # not put back: nothing else ran


def test_a_restore_not_committed_answers_503_and_puts_the_tenant_back() -> None:
    now = time.time()
    api, member, _ = local_api(now - 60)
    member.faults["update_tenant_with_new_incarnation"] = ["lost"]
    status, body = asyncio.run(call_restore(api, now - 30))
    assert status == 503 and "not committed" in body["message"], body
    tenant = member.registry.tenant("acme")
    assert tenant is not None
    assert (tenant["incarnation"], tenant["epoch"], tenant["nodeId"], tenant["moving"]) == ("inc-1", 2, "n1", None)

    # Neither the outcome nor a barrier: the answer says so; the tenant is put back (the restore was not made).
    member.faults.update(update_tenant_with_new_incarnation=["lost"], barrier=["lost"])
    status, body = asyncio.run(call_restore(api, now - 30))
    assert status == 503 and "may or may not" in body["message"], body
    tenant = member.registry.tenant("acme")
    assert tenant is not None and (tenant["incarnation"], tenant["epoch"], tenant["moving"]) == ("inc-1", 3, None)


def test_a_move_committed_despite_command_failed_answers_200() -> None:
    now = time.time()
    api, member, nodes = local_api(now - 60)
    member.registry.register_node("n2", "http://127.0.0.1:10", 10, now, _doApply=True)
    member.faults["assign"] = ["applied"]
    request = LocalRequest("acme", {"nodeId": "n2"})
    asyncio.run(api.move_tenant(request))  # type: ignore[arg-type]
    assert request.sent is not None and request.sent[0] == 200
    tenant = member.registry.tenant("acme")
    assert tenant is not None and (tenant["nodeId"], tenant["epoch"], tenant["moving"]) == ("n2", 2, None)


def test_two_concurrent_restores_release_the_tenant_once() -> None:
    """Both pass the check for a marker before either has set one; the registry lets only one set it, so
    only one has the node release the tenant, and the loser does not clear the winner's marker."""
    now = time.time()
    api, member, nodes = local_api(now - 60)

    async def both() -> list[tuple[int, Any]]:
        return list(await asyncio.gather(call_restore(api, now - 30), call_restore(api, now - 20)))

    results = asyncio.run(both())
    assert sorted(status for status, _ in results) == [200, 409], results
    assert [call for call in nodes.calls if call[0] == "release"] == [("release", 1)]
    tenant = member.registry.tenant("acme")
    assert tenant is not None and (tenant["epoch"], tenant["moving"]) == (2, None)
    assert member.submitted.count("set_moving") == 2  # the loser's refused marker, and no clearing after it


@pytest.mark.exclusive
def test_the_trials_share_one_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The incarnation's trial and its seed's together take at most RESTORE_TRIAL_TIMEOUT_SECONDS, so the
    request's worst case stays below what the CLI waits."""
    monkeypatch.setattr(api_module, "RESTORE_TRIAL_TIMEOUT_SECONDS", 0.6)
    now = time.time()
    api, member, nodes = local_api(now - 60)
    member.registry.update_tenant_with_new_incarnation("acme", 1, "inc-2", {"incarnation": "inc-1", "at": iso(now - 50)}, now - 40,
                                   _doApply=True)
    nodes.check_delay = 0.4
    nodes.check_errors = [NodeError(400, "no replica", {"incarnation": {"code": "validation_no_replica"}})]
    started = time.monotonic()
    status, body = asyncio.run(call_restore(api, now - 30))
    assert status == 503 and "timed out" in body["message"], body
    assert time.monotonic() - started < 0.6 + 0.5
    assert [call for call in nodes.calls if call[0] == "restore-check"] == [("restore-check", "inc-2"),
                                                                           ("restore-check", "inc-1")]
    tenant = member.registry.tenant("acme")
    assert tenant is not None and (tenant["incarnation"], tenant["epoch"], tenant["moving"]) == ("inc-2", 3, None)


def test_the_cli_waits_longer_than_the_control_plane_can_take() -> None:
    assert api_module.RESTORE_WORST_CASE_SECONDS >= (api_module.PLACEMENT_WAIT_SECONDS
                                                     + api_module.MOVE_RELEASE_TIMEOUT_SECONDS
                                                     + api_module.RESTORE_TRIAL_TIMEOUT_SECONDS)
    assert api_module.RESTORE_TRIAL_TIMEOUT_SECONDS > RESTORE_CHECK_TIMEOUT_SECONDS
    assert RESTORE_REQUEST_TIMEOUT_SECONDS >= api_module.RESTORE_WORST_CASE_SECONDS + 30
    assert STALE_MOVE_SECONDS >= 2 * api_module.RESTORE_WORST_CASE_SECONDS


# ---- the move marker ------------------------------------------------------------------------------------


def test_a_move_marker_is_set_once_with_its_time_and_cleared_only_by_its_owner() -> None:
    registry = registry_with()
    outcome, tenant = registry.set_moving("acme", "n1", 1, CREATED + 5, _doApply=True)
    assert outcome == "ok" and (tenant["moving"], tenant["movingSince"]) == ("n1", CREATED + 5)
    assert registry.set_moving("acme", "n2", 1, CREATED + 6, _doApply=True)[0] == "conflict"  # another flow
    assert registry.set_moving("acme", None, 1, CREATED + 6, _doApply=True)[0] == "conflict"  # not its marker
    assert registry.tenant("acme")["movingSince"] == CREATED + 5  # type: ignore[index]
    assert registry.set_moving("acme", None, 1, CREATED + 5, _doApply=True)[0] == "ok"
    tenant = registry.tenant("acme")
    assert tenant is not None and (tenant["moving"], tenant["movingSince"]) == (None, None)
    assert registry.set_moving("acme", None, 1, CREATED + 5, _doApply=True)[0] == "ok"  # nothing left to clear
    # A marker from before markers had a time: cleared by anyone (as before).
    registry.update_tenant("acme", {"moving": "n1", "movingSince": None}, CREATED + 7, _doApply=True)
    assert registry.set_moving("acme", None, 1, _doApply=True)[0] == "ok"
    assert registry.tenant("acme")["moving"] is None  # type: ignore[index]


def reconciler_on(registry: Registry, stale_move: float = 900.0) -> tuple[Reconciler, LocalMember]:
    member = LocalMember(registry)
    return Reconciler(member, stale_move=stale_move), member  # type: ignore[arg-type]


def test_the_leader_puts_back_a_tenant_left_moving() -> None:
    """A move or restore whose control plane member died after marking the tenant (and maybe after its node
    released it) leaves it moving forever otherwise: held by gateways, skipped by placement, 409 to moves
    and restores."""
    now = time.time()
    registry = registry_with(created=now - 3600)
    registry.register_node("n1", "http://127.0.0.1:9", 10, now, _doApply=True)  # heartbeat: up and current
    for tenant_id in ("fresh", "stale"):
        registry.create_tenant({**registry.tenant("acme"), "id": tenant_id}, _doApply=True)  # type: ignore[dict-item]
    registry.set_moving("stale", "n1", 1, now - STALE_MOVE_SECONDS - 1, _doApply=True)
    registry.set_moving("fresh", "n1", 1, now - 60, _doApply=True)
    reconciler, member = reconciler_on(registry, STALE_MOVE_SECONDS)
    asyncio.run(reconciler.check_once())
    stale, fresh = registry.tenant("stale"), registry.tenant("fresh")
    assert stale is not None and fresh is not None
    assert (stale["nodeId"], stale["epoch"], stale["moving"], stale["movingSince"]) == ("n1", 2, None, None)
    assert (fresh["nodeId"], fresh["epoch"], fresh["moving"]) == ("n1", 1, "n1")  # its flow may still run
    assert member.submitted == ["assign"]

    # A flow that finished (or a new one that began) between the leader's look and its command is left be.
    registry.set_moving("fresh", None, 1, now - 60, _doApply=True)
    registry.set_moving("fresh", "n1", 1, now, _doApply=True)
    outcome, moved = registry.assign([("fresh", "n1", 1)], now, False, True, now - 60, _doApply=True)
    assert outcome == "ok" and moved == [] and registry.tenant("fresh")["epoch"] == 1  # type: ignore[index]


def test_a_tenant_left_moving_on_a_down_node_is_placed_anew() -> None:
    now = time.time()
    registry = registry_with(created=now - 3600)
    registry.register_node("n2", "http://127.0.0.1:10", 10, now, _doApply=True)
    registry.mark_node_down("n1", now - 3600, _doApply=True)
    registry.set_moving("acme", "n1", 1, now - 7200, _doApply=True)
    reconciler, _ = reconciler_on(registry)
    asyncio.run(reconciler.check_once())
    tenant = registry.tenant("acme")
    assert tenant is not None and (tenant["nodeId"], tenant["moving"]) == ("n2", None) and tenant["epoch"] == 3


def test_a_marker_without_a_time_is_stale_once_the_leader_has_seen_it_long_enough() -> None:
    """Markers set by a control plane from before ``movingSince`` (the ones this fix is for, among others)
    count from when this leader first saw them."""
    now = time.time()
    registry = registry_with(created=now - 3600)
    registry.update_tenant("acme", {"moving": "n1"}, now, _doApply=True)
    reconciler, _ = reconciler_on(registry, 100.0)
    asyncio.run(reconciler._put_back_stale_moves(now))
    asyncio.run(reconciler._put_back_stale_moves(now + 99))
    assert registry.tenant("acme")["moving"] == "n1"  # type: ignore[index]
    asyncio.run(reconciler._put_back_stale_moves(now + 101))
    tenant = registry.tenant("acme")
    assert tenant is not None and (tenant["nodeId"], tenant["epoch"], tenant["moving"]) == ("n1", 2, None)


# ---- pbfast tenant restore --to: which replica, and when the seed ------------------------------------------


FAKE_LITESTREAM = """#!{python}
import json, os, shutil, sys
scenario = json.load(open(os.environ["FAKE_LITESTREAM_SCENARIO"]))
with open(os.environ["FAKE_LITESTREAM_SCENARIO"] + ".log", "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
incarnation = sys.argv[-1].rstrip("/").rsplit("/", 1)[-1]
entry = scenario[incarnation]
if sys.argv[1] == "ltx":
    print("level  min_txid  max_txid  size  created")
    for n, created in enumerate(entry["files"]):
        print(f"0      {{n + 1:016x}}  {{n + 1:016x}}  4096  {{created}}")
    sys.exit(0)
answer = entry["restore"]
if answer == "copy":
    open(sys.argv[sys.argv.index("-o") + 1], "wb").write(b"restored " + incarnation.encode())
    sys.exit(0)
if answer != "none":
    print(answer)
sys.exit(0 if answer == "none" else 1)
"""


def restore_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scenario: dict[str, Any], at: str) -> tuple[Any, list[Any]]:
    """Run ``pbfast tenant restore acme --to DIR --at AT`` in process against a scripted litestream and a
    tenant whose current incarnation ``inc-2`` was seeded from ``inc-1``; its result (or ControlPlaneError)
    and the litestream calls made."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "litestream"
    script.write_text(FAKE_LITESTREAM.format(python=sys.executable))
    script.chmod(0o755)
    scenario_file = tmp_path / "scenario.json"
    scenario_file.write_text(json.dumps(scenario))
    (tmp_path / "scenario.json.log").unlink(missing_ok=True)
    monkeypatch.setenv("PBFAST_LITESTREAM", str(script))
    monkeypatch.setenv("FAKE_LITESTREAM_SCENARIO", str(scenario_file))
    monkeypatch.setattr(operator_cli, "check_pocketbase_database", lambda path: None)

    class Client:
        def request(self, method: str, path: str) -> dict[str, Any]:
            return {"id": "acme", "incarnation": "inc-2", "incarnations": [
                {"incarnation": "inc-1", "startedAt": "2025-01-15T08:00:00Z", "endedAt": "2025-01-15T09:00:00Z",
                 "restoredFrom": None},
                {"incarnation": "inc-2", "startedAt": "2025-01-15T09:00:00Z", "endedAt": None,
                 "restoredFrom": {"incarnation": "inc-1", "at": "2025-01-15T08:30:00Z"}}]}

    args = argparse.Namespace(id="acme", at=at, to=str(tmp_path / f"out-{len(list(tmp_path.iterdir()))}"),
                              s3_endpoint=None, s3_bucket="pbfast", replica_dir=str(tmp_path / "replica"),
                              data_dir=str(tmp_path))
    try:
        result: Any = operator_cli.restore_tenant(Client(), args)  # type: ignore[arg-type]
    except ControlPlaneError as err:
        result = err
    calls = [json.loads(line) for line in (tmp_path / "scenario.json.log").read_text().splitlines()]
    return result, calls


def test_restore_to_takes_the_seed_only_for_an_incarnation_without_replica(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    at = "2025-01-16T10:00:00Z"  # in inc-2
    never_shipped = {"inc-2": {"restore": "none", "files": []}, "inc-1": {"restore": "copy", "files": []}}
    result, calls = restore_to(tmp_path, monkeypatch, never_shipped, at)
    assert not isinstance(result, ControlPlaneError), result
    assert (result["incarnation"], result["replicaAt"]) == ("inc-1", "2025-01-15T08:30:00Z")
    assert [call[0] for call in calls] == ["restore", "ltx", "restore"]

    # inc-2 has files, but none old enough for that time any more (pruned): not the seed, days earlier.
    for answer in ("no backups found", "timestamp does not exist"):
        pruned = {"inc-2": {"restore": f"error: {answer}", "files": ["2025-01-17T00:00:00Z", "2025-01-18T00:00:00Z"]},
                  "inc-1": {"restore": "copy", "files": []}}
        result, calls = restore_to(tmp_path, monkeypatch, pruned, at)
        assert isinstance(result, ControlPlaneError) and result.status == 400, result
        assert "not restorable" in result.body["message"] and "inc-2" in result.body["message"]
        assert [call[0] for call in calls] == ["restore", "ltx"]  # the seed was not tried

    # After the replica's newest file: the latest state is the state then.
    idle = {"inc-2": {"restore": "error: timestamp does not exist", "files": ["2025-01-15T09:00:01Z"]},
            "inc-1": {"restore": "copy", "files": []}}
    monkeypatch.setattr(operator_cli, "_run_litestream", _latest_only(operator_cli._run_litestream))
    result, calls = restore_to(tmp_path, monkeypatch, idle, at)
    assert not isinstance(result, ControlPlaneError) and result["incarnation"] == "inc-2", result


def _latest_only(run: Any) -> Any:
    """The scripted litestream restores only without -timestamp when the scenario says "copy" for it."""
    def wrapped(command: list[str], store: Any, out_dir: Path, label: str) -> tuple[int, str]:
        if "-timestamp" not in command:
            Path(command[command.index("-o") + 1]).write_bytes(b"latest")
            return 0, ""
        return run(command, store, out_dir, label)  # type: ignore[no-any-return]
    return wrapped


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


@pytest.mark.exclusive
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


def test_raft_command_numbers_stay_stable_across_versions() -> None:
    """pysyncobj numbers commands by sorted name and journals the numbers: a journal from an older version
    must replay into the same commands, so new commands only ever sort last."""
    from pbfast.control_plane.registry import COMMAND_ORDER  # noqa: PLC0415

    # what pysyncobj enumerates and sorts: the versioned names (``<name>_v0``)
    versioned = sorted(name for name in dir(Registry) if getattr(getattr(Registry, name), "replicated", False)
                       and name != getattr(getattr(Registry, name), "origName", None))
    assert tuple(getattr(Registry, name).origName for name in versioned) == COMMAND_ORDER
    # the order shipped before in-place restores (commit 6430fa6) is a prefix of today's
    assert COMMAND_ORDER[:11] == ("assign", "barrier", "create_tenant", "delete_tenant", "heartbeat",
                                  "mark_node_down", "purge_tombstones", "register_node", "remove_node",
                                  "set_moving", "update_tenant")
