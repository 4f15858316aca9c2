"""The one parse of a request path every pbfast server authenticates and routes on (``pbfast.http``): only
the canonical spelling names a route, and a request that names no route is held to the router's guard (deny by
default). The servers' behaviour over HTTP is in ``test_internal_routes.py``."""

from __future__ import annotations

import pytest

from pbfast.http import PUBLIC, Guard, Request, Router, path_segments, routing_path


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


def test_a_tenant_routes_on_the_path_as_the_client_spelt_it() -> None:
    """PocketBase (Go's ServeMux) splits the path as sent at its ``/`` and then decodes each segment: an
    encoded ``/`` or ``..`` is part of a value, never a separator or a dot segment. The server hands over the
    path decoded; the client's spelling comes from the gateway, and is used only when it decodes to that."""
    async def handler(request: Request) -> None:
        raise AssertionError("never called here")

    tenant = Router[object](escaped=True)
    tenant.add("GET", "/api/files/{collection}/{id}/{filename}", handler)
    tenant.add("GET", "/api/health", handler)

    def route(raw: str) -> tuple[object, dict[str, str]]:
        from urllib.parse import unquote
        found = tenant.match("GET", routing_path(unquote(raw), raw))
        return found.handler, found.params

    assert route("/api/files/c/r/a%2Fb") == (handler, {"collection": "c", "id": "r", "filename": "a/b"})
    assert route("/api/files/c/r/%2e%2e") == (handler, {"collection": "c", "id": "r", "filename": ".."})
    assert route("/api/files/c/%2E%2E%2F%2E%2E/x") == (handler, {"collection": "c", "id": "../..", "filename": "x"})
    assert route("/api/files/c/r/a%252F") == (handler, {"collection": "c", "id": "r", "filename": "a%2F"})
    assert route("/api/files/c/r/x%00") == (handler, {"collection": "c", "id": "r", "filename": "x\x00"})
    for elsewhere in ("/api/files/c%2Fr/x", "/api/files%2Fc/r/x", "/api%2Fhealth", "/api/health%2F",
                      "/api/files/c/r/x/..", "/api/files/c/r//x"):
        assert route(elsewhere)[0] is None, elsewhere
    # a spelling that is not this request's is ignored: the decoded path, every "/" a separator, as before
    assert routing_path("/api/health", "/api/files/c/r/a%2Fb") == "/api/health"
    assert tenant.match("GET", routing_path("/api/files/c/r/100%", None)).params["filename"] == "100%"
    assert tenant.match("GET", routing_path("/api/files/c/r/a/b", None)).handler is None
    # the node's own routes keep the decoded path and the canonical parse, whatever the spelling
    internal = Router[object](Guard(lambda scope: False, "token please"))
    internal.add("GET", "/api/node/tenants/{id}/data", handler)
    for decoded in ("/api/node/tenants/a/b/data", "/api/node/tenants/../data", "/api/node/tenants/a%2Fb/x/data"):
        assert internal.match("GET", decoded).handler is None, decoded
