"""The one parse of a request path every pbfast server authenticates and routes on (``pbfast.http``): only
the canonical spelling names a route, and a request that names no route is held to the router's guard (deny by
default). The servers' behaviour over HTTP is in ``test_internal_routes.py``."""

from __future__ import annotations

import pytest

from pbfast.http import PUBLIC, Guard, Request, Router, path_segments


def test_only_the_canonical_spelling_names_a_route() -> None:
    assert path_segments("/") == ()
    assert path_segments("/api/node/tenants/beta/data") == ("api", "node", "tenants", "beta", "data")
    for other in ("", "api/node", "//api/node", "/api//node", "/api/node/", "/./api", "/api/..", "/api/.",
                  "/api\x00/node", "/api/no\nde", "*"):
        assert path_segments(other) is None, other

    async def handler(request: Request) -> None:
        raise AssertionError("never called here")

    guard = Guard(lambda scope: False, "token please")
    router = Router(guard)
    router.add("GET", "/api/health", handler, guard=PUBLIC)
    router.add("GET", "/api/node/tenants/{id}/data", handler)
    router.mount("/t/{id}", handler, guard=PUBLIC)
    assert router.match("GET", "/api/health").guard is PUBLIC
    assert router.match("POST", "/api/health").guard is guard  # another method: the router's guard
    found = router.match("GET", "/api/node/tenants/beta/data")
    assert found.handler is handler and found.params == {"id": "beta"} and found.guard is guard
    for other in ("//api/node/tenants/beta/data", "/api/node/tenants/beta/data/", "/api/node/tenants/./data",
                  "/API/node/tenants/beta/data", "//api/health", "/api/health/", "//t/beta/x", "/t/./x", "/t//x"):
        unknown = router.match("GET", other)
        assert unknown.handler is None and unknown.guard is guard, other
    mounted = router.match("PATCH", "/t/beta//api/x/")
    assert mounted.params == {"id": "beta"} and mounted.path == "//api/x/" and mounted.guard is PUBLIC
    assert router.match("GET", "/t/beta").path == "/"
    with pytest.raises(ValueError):
        router.add("GET", "/api//x", handler)
