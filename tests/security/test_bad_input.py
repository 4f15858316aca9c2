"""Bad input must never give a 5xx or break a collection (issue 11 §3).

Real processes on loopback: an all-in-one (Python gateway) serving a copy of PocketBase's test data, and a
cluster (control plane, tenant node, native gateway) whose tenant is reached both through the gateway and
at the node directly. Expected answers are stock PocketBase 0.40.6's (the differential scenarios in
``tests/pocketbase/test_differential.py`` compare the same requests with the real binary).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from inputrig import AllInOne, ClusterRig, Target, start_all_in_one_rig, start_cluster_rig

BAD_REQUEST = {"data": {}, "message": "Something went wrong while processing your request.", "status": 400}


@pytest.fixture(scope="module")
def aio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AllInOne]:
    with start_all_in_one_rig(tmp_path_factory.mktemp("bad-input-aio")) as rig:
        yield rig


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterRig]:
    with start_cluster_rig(tmp_path_factory.mktemp("bad-input-cluster")) as rig:
        yield rig


@pytest.fixture(params=["all-in-one", "native gateway", "tenant node"])
def target(request: pytest.FixtureRequest) -> Target:
    if request.param == "all-in-one":
        return request.getfixturevalue("aio").gateway  # type: ignore[no-any-return]
    rig: ClusterRig = request.getfixturevalue("cluster")
    return rig.gateway if request.param == "native gateway" else rig.node


def nested(depth: int, inner: str) -> str:
    return "(" * depth + inner + ")" * depth


def assert_pocketbase_error(answer: httpx.Response, status: int) -> None:
    assert answer.status_code == status, (answer.status_code, answer.text[:300])
    body = answer.json()
    assert set(body) == {"status", "message", "data"} and body["status"] == status, body


# ---- filters ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [800, 1000, 1700])
def test_deeply_nested_filter_is_answered(target: Target, depth: int) -> None:
    """PocketBase answers 200 up to its 3,500-byte filter limit; pbfast raised RecursionError (500)."""
    for inner in ("id != ''", "id != '' || id = ''"):
        answer = target.request("GET", "/api/collections/_superusers/records", superuser=True,
                                params={"filter": nested(depth, inner), "fields": "id"})
        assert answer.status_code == 200, (depth, answer.text[:300])
        assert answer.json()["totalItems"] >= 1


@pytest.mark.parametrize("depth", [5000, 10000])
def test_filter_over_the_length_limit_is_a_clear_400(target: Target, depth: int) -> None:
    answer = target.request("GET", "/api/collections/_superusers/records", superuser=True,
                            params={"filter": nested(depth, "id != ''")})
    assert answer.status_code == 400 and answer.json() == BAD_REQUEST


def test_deeply_nested_list_rules_are_evaluated(aio: AllInOne) -> None:
    """API rules have no length limit in PocketBase: 1,000 and 5,000 levels answer 200 (pbfast refused rules
    over 3,500 bytes and failed with RecursionError on deep ones)."""
    gw = aio.gateway
    original = gw.request("GET", "/api/collections/demo1", superuser=True).json()["listRule"]
    try:
        for depth in (1000, 5000, 50000):
            rule = nested(depth, "id = '84nmscqy84lsi1t'")
            saved = gw.request("PATCH", "/api/collections/demo1", superuser=True, json={"listRule": rule})
            assert saved.status_code == 200, saved.text[:300]
            listed = gw.request("GET", "/api/collections/demo1/records", params={"fields": "id"})
            assert listed.status_code == 200, listed.text[:300]
            assert [item["id"] for item in listed.json()["items"]] == ["84nmscqy84lsi1t"]
    finally:
        gw.request("PATCH", "/api/collections/demo1", superuser=True, json={"listRule": original})


def test_query_sqlite_refuses_is_a_400(target: Target) -> None:
    """More joins than SQLite allows (64): its error is the filter's fault, answered 400 like PocketBase."""
    too_many_joins = " && ".join(f"@collection._superusers:a{i}.id != ''" for i in range(70))
    answer = target.request("GET", "/api/collections/_superusers/records", superuser=True,
                            params={"filter": too_many_joins})
    assert answer.status_code == 400 and answer.json() == BAD_REQUEST
    assert target.request("GET", "/api/health").status_code == 200
