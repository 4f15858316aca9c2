"""The served OpenAPI document is valid and says exactly what the server does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate

from cpcluster import ADMIN, CLUSTER, Member, Start, start_cluster


@pytest.fixture
def cp(pbfast_process: Start, tmp_path: Path) -> Member:
    return start_cluster(pbfast_process, tmp_path, 1)[0]


def response_schema(document: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    response = document["paths"][path][method]["responses"][str(status)]
    if "$ref" in response:
        response = document["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
    schema = response["content"]["application/json"]["schema"]
    return {**schema, "components": document["components"]}


def check(document: dict[str, Any], path: str, method: str, response: httpx.Response) -> None:
    schema = response_schema(document, path, method, response.status_code)
    resolver_schema = {"$ref": "#/x", "x": schema, "components": document["components"]}
    jsonschema.validate(response.json(), resolver_schema)


def test_document_is_valid_and_matches_routes(cp: Member) -> None:
    document = httpx.get(f"{cp.url}/api/cp/openapi.json", headers=ADMIN).json()
    validate(document)
    from pbfast.control_plane.app import ControlPlaneApp  # the router is the source of truth

    class _Api:
        def __getattr__(self, name: str) -> Any:
            return lambda request: None

    served = set(ControlPlaneApp(_Api(), "a" * 16, "c" * 16).router.routes())  # type: ignore[arg-type]
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert documented == served


def test_responses_match_schemas(cp: Member) -> None:
    document = httpx.get(f"{cp.url}/api/cp/openapi.json", headers=ADMIN).json()
    created = httpx.post(f"{cp.url}/api/cp/tenants", headers=ADMIN, json={"id": "docs", "storageQuotaMB": 5})
    check(document, "/api/cp/tenants", "post", created)
    check(document, "/api/cp/tenants", "post", httpx.post(f"{cp.url}/api/cp/tenants", headers=ADMIN, json={}))
    check(document, "/api/cp/tenants", "post", httpx.post(f"{cp.url}/api/cp/tenants", headers=ADMIN,
                                                         json={"id": "docs"}))
    check(document, "/api/cp/tenants", "get", httpx.get(f"{cp.url}/api/cp/tenants", headers=ADMIN))
    check(document, "/api/cp/tenants/{id}", "get", httpx.get(f"{cp.url}/api/cp/tenants/docs", headers=ADMIN))
    check(document, "/api/cp/tenants/{id}", "get", httpx.get(f"{cp.url}/api/cp/tenants/nope", headers=ADMIN))
    check(document, "/api/cp/tenants/{id}", "patch",
          httpx.patch(f"{cp.url}/api/cp/tenants/docs", headers=ADMIN, json={"status": "suspended"}))
    node = httpx.put(f"{cp.url}/api/cp/nodes/n1", headers=CLUSTER,
                     json={"address": "http://127.0.0.1:9", "maxTenants": 4})
    check(document, "/api/cp/nodes/{id}", "put", node)
    check(document, "/api/cp/nodes", "get", httpx.get(f"{cp.url}/api/cp/nodes", headers=ADMIN))
    check(document, "/api/cp/nodes/{id}/heartbeat", "post",
          httpx.post(f"{cp.url}/api/cp/nodes/n1/heartbeat", headers=CLUSTER, json={"openTenants": 0}))
    check(document, "/api/cp/routes", "get", httpx.get(f"{cp.url}/api/cp/routes", headers=CLUSTER))
    check(document, "/api/cp/tenants/{id}/move", "post",
          httpx.post(f"{cp.url}/api/cp/tenants/docs/move", headers=ADMIN, json={"nodeId": "zz"}))
    check(document, "/api/cp/tenants", "get", httpx.get(f"{cp.url}/api/cp/tenants", headers=CLUSTER))
