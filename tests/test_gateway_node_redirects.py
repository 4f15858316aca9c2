"""The native gateway leaves a node's answers' CORS headers as the node wrote them: PocketBase answers a
redirect to the clean path (``//api/health`` -> ``/api/health``) before its CORS middleware, so without
``Vary``/``Access-Control-Allow-Origin``. Seen through an all-in-one whose node has worker processes
(``--workers=2``): its gateway forwards to the node over HTTP, as to a remote node."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from cpcluster import Start

sys.path.insert(0, str(Path(__file__).parent / "pocketbase"))
from pbharness import create_tenant, start_all_in_one  # noqa: E402


def test_a_nodes_redirect_to_the_clean_path_gets_no_cors_headers(pbfast_process: Start, tmp_path: Path) -> None:
    _, cp, gw = start_all_in_one(pbfast_process, tmp_path / "data", "--workers=2")
    create_tenant(cp, gw, "r")
    for origin in ({}, {"Origin": "https://app.example"}):
        for target, location in (("/t/r//api/health", "/t/r/api/health"), ("/t/r/api//health", "/t/r/api/health")):
            answer = httpx.get(gw + target, headers=origin)
            assert (answer.status_code, answer.headers.get("location")) == (307, location), answer.text
            assert "vary" not in answer.headers and "access-control-allow-origin" not in answer.headers, \
                answer.headers
        # The node's other answers carry PocketBase's CORS headers, as before.
        health = httpx.get(gw + "/t/r/api/health", headers=origin)
        assert health.status_code == 200 and health.headers.get("vary") == "Origin", health.headers
        assert ("access-control-allow-origin" in health.headers) == bool(origin), health.headers
