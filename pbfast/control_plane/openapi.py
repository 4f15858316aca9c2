"""The OpenAPI 3.1 document of the control plane API, served at ``GET /api/cp/openapi.json``.

A test checks that its paths and methods are exactly the router's and that real responses match the
schemas, so the document cannot drift from the code.
"""

from __future__ import annotations

import functools
from typing import Any

from pbfast import __version__

__all__ = ["openapi_document"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR = {"$ref": "#/components/responses/Error"}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 63}}
_QUOTA = {"type": ["integer", "null"], "minimum": 0}


def _op(summary: str, ok: dict[str, Any], *, body: dict[str, Any] | None = None, params: list[Any] | None = None,
        security: str = "admin", errors: tuple[int, ...] = (400, 401, 403)) -> dict[str, Any]:
    none: list[str] = []
    schemes = {"admin": [{"adminToken": none}], "cluster": [{"clusterToken": none}],
               "either": [{"adminToken": none}, {"clusterToken": none}]}[security]
    operation: dict[str, Any] = {"summary": summary, "security": schemes, "responses": dict(ok)}
    for status in errors:
        operation["responses"][str(status)] = _ERROR
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        operation["parameters"] = params
    return operation


_TIME_LIMIT: dict[str, Any] = {"type": ["integer", "null"], "minimum": 1, "maximum": 3_600_000}
_TIME_LIMIT_TEXT = ("milliseconds of database work one request may take before it is stopped (400); null = the "
                    "node's --request-time-limit")


@functools.cache
def openapi_document() -> dict[str, Any]:
    seed = {
        "type": ["object", "null"],
        "required": ["incarnation", "at"],
        "additionalProperties": False,
        "properties": {"incarnation": {"type": "string"}, "at": {"type": "string", "format": "date-time"}},
    }
    tenant: dict[str, Any] = {
        "type": "object",
        "required": ["id", "status", "nodeId", "epoch", "moving", "storageQuotaMB", "apiRequestsQuota",
                     "requestTimeLimitMs", "durability", "incarnation", "restoredFrom", "incarnations", "usage", "createdAt",
                     "updatedAt"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"},
            "status": {"type": "string", "enum": ["active", "suspended"]},
            "nodeId": {"type": ["string", "null"], "description": "null until a node is available"},
            "epoch": {"type": "integer", "description": "fencing epoch, bumped on every (re)assignment"},
            "moving": {"type": ["string", "null"],
                       "description": "target node while a move or an in-place restore is in progress (the "
                                      "tenant is not served meanwhile)"},
            "storageQuotaMB": {**_QUOTA, "description": "null = unlimited"},
            "apiRequestsQuota": {**_QUOTA, "description": "API requests per UTC day; null = unlimited"},
            "requestTimeLimitMs": {**_TIME_LIMIT, "description": _TIME_LIMIT_TEXT},
            "durability": {"type": "string", "enum": ["async", "sync"]},
            "incarnation": {"type": "string",
                            "description": "this life of the tenant id: its replicas live under tenants/{id}/{incarnation}/"},
            "restoredFrom": {**seed, "description": "what the current incarnation started from (an in-place "
                                                    "restore); null for a tenant never restored in place"},
            "incarnations": {
                "type": "array",
                "description": "the current incarnation (last) and the earlier ones of this tenant that in-place "
                               "restores ended (up to 20), oldest first; times are RFC 3339 UTC",
                "items": {
                    "type": "object",
                    "required": ["incarnation", "startedAt", "endedAt", "restoredFrom"],
                    "additionalProperties": False,
                    "properties": {
                        "incarnation": {"type": "string"},
                        "startedAt": {"type": "string", "format": "date-time"},
                        "endedAt": {"type": ["string", "null"], "format": "date-time",
                                    "description": "null for the current incarnation"},
                        "restoredFrom": seed,
                    },
                },
            },
            "usage": {
                "type": "object",
                "required": ["storageMB", "apiRequests", "dbTimeLimited", "dbQueueRejected", "dbWaitSeconds",
                             "periodStart"],
                "additionalProperties": False,
                "properties": {
                    "storageMB": {"type": "number"},
                    "apiRequests": {"type": "integer"},
                    "dbTimeLimited": {"type": "integer",
                                      "description": "requests stopped by their time limit this period"},
                    "dbQueueRejected": {"type": "integer",
                                        "description": "requests refused (429) because the tenant's queue was full"},
                    "dbWaitSeconds": {"type": "number",
                                      "description": "time the tenant's requests waited for a database thread"},
                    "periodStart": {"type": "string"},
                },
            },
            "createdAt": {"type": "string"},
            "updatedAt": {"type": "string"},
        },
    }
    node = {
        "type": "object",
        "required": ["id", "address", "status", "maxTenants", "assignedTenants", "openTenants", "load",
                     "registeredAt", "lastHeartbeatAt"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string"},
            "address": {"type": "string"},
            "status": {"type": "string", "enum": ["up", "down"]},
            "maxTenants": {"type": "integer"},
            "assignedTenants": {"type": "integer"},
            "openTenants": {"type": "integer"},
            "load": {"type": "number"},
            "registeredAt": {"type": "string"},
            "lastHeartbeatAt": {"type": "string"},
        },
    }
    route_table = {
        "type": "object",
        "required": ["version", "routes"],
        "properties": {
            "version": {"type": "integer"},
            "routes": {"type": "array", "items": {
                "type": "object",
                "required": ["tenantId", "nodeId", "address", "status", "epoch"],
                "additionalProperties": False,
                "properties": {
                    "tenantId": {"type": "string"},
                    "nodeId": {"type": ["string", "null"]},
                    "address": {"type": ["string", "null"]},
                    "status": {"type": "string", "enum": ["active", "suspended", "moving", "unplaced"]},
                    "epoch": {"type": "integer"},
                },
            }},
        },
    }
    create: dict[str, Any] = {
        "type": "object",
        "required": ["id"],
        "additionalProperties": False,
        "properties": {
            "id": tenant["properties"]["id"],
            "storageQuotaMB": _QUOTA,
            "apiRequestsQuota": _QUOTA,
            "requestTimeLimitMs": _TIME_LIMIT,
            "durability": {"type": "string", "enum": ["async", "sync"]},
            "superuser": {
                "type": "object",
                "required": ["email", "password"],
                "additionalProperties": False,
                "properties": {"email": {"type": "string", "format": "email"},
                               "password": {"type": "string", "minLength": 8, "maxLength": 71}},
            },
        },
    }
    update = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "storageQuotaMB": _QUOTA,
            "apiRequestsQuota": _QUOTA,
            "requestTimeLimitMs": _TIME_LIMIT,
            "status": {"type": "string", "enum": ["active", "suspended"]},
            "durability": {"type": "string", "enum": ["async", "sync"]},
        },
    }
    tenant_list = {
        "type": "object",
        "required": ["page", "perPage", "totalItems", "totalPages", "items"],
        "properties": {"page": {"type": "integer"}, "perPage": {"type": "integer"},
                       "totalItems": {"type": "integer"}, "totalPages": {"type": "integer"},
                       "items": {"type": "array", "items": _ref("Tenant")}},
    }
    assignments = {
        "type": "object",
        "required": ["nodeId", "tenants", "deleted", "routesVersion", "nodeTimeoutSeconds"],
        "properties": {"nodeId": {"type": "string"}, "tenants": {"type": "object"},
                       "deleted": {"type": "array", "items": {"type": "string"}},
                       "routesVersion": {"type": "integer"},
                       "nodeTimeoutSeconds": {
                           "type": "number",
                           "description": "the control plane's --node-timeout: the node stops serving its tenants "
                                          "when heartbeats are not acknowledged for half of it"}},
    }
    query = [
        {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}},
        {"name": "perPage", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
        {"name": "status", "in": "query", "schema": {"type": "string", "enum": ["active", "suspended"]}},
        {"name": "nodeId", "in": "query", "schema": {"type": "string"}},
    ]
    no_content = {"204": {"description": "Done."}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "pbfast control plane", "version": __version__,
                 "description": "Tenant and node registry. Errors use PocketBase's {status, message, data}."},
        "paths": {
            "/api/health": {"get": {"summary": "Health and Raft role of this member", "security": [],
                                    "responses": {"200": _json({"type": "object"}, "Healthy.")}}},
            "/api/cp/tenants": {
                "post": _op("Create a tenant", {"200": _json(_ref("Tenant"), "The new tenant.")},
                            body=create, errors=(400, 401, 403, 409, 413, 503)),
                "get": _op("List tenants", {"200": _json(tenant_list, "A page of tenants.")}, params=query),
            },
            "/api/cp/tenants/{id}": {
                "get": _op("View a tenant", {"200": _json(_ref("Tenant"), "The tenant.")}, params=[_ID],
                           errors=(401, 403, 404)),
                "patch": _op("Update quotas, status or durability", {"200": _json(_ref("Tenant"), "Updated.")},
                             body=update, params=[_ID], errors=(400, 401, 403, 404, 413, 503)),
                "delete": _op("Delete a tenant", no_content, params=[_ID], errors=(401, 403, 404, 503)),
            },
            "/api/cp/tenants/{id}/move": {
                "post": _op("Move a tenant to another node", {"200": _json(_ref("Tenant"), "Moved.")},
                            body={"type": "object", "required": ["nodeId"], "additionalProperties": False,
                                  "properties": {"nodeId": {"type": "string"}}},
                            params=[_ID], errors=(400, 401, 403, 404, 409, 503)),
            },
            "/api/cp/tenants/{id}/restore": {
                "post": _op("Roll the tenant back, in place, to its state at a point in time: a new incarnation "
                            "seeded from the replica of the one live then, on the same node, epoch + 1. The node "
                            "releases the tenant, then restores it as a trial (the tenant is not served "
                            "meanwhile, up to about 6 minutes for a large database); if that fails the tenant "
                            "is served again as it was, under epoch + 1. 400 on `at` when the replica holds no "
                            "restorable state then; 409 while a move or another restore is under way; 503 when "
                            "the node could not release the tenant or try the restore",
                            {"200": _json(_ref("Tenant"), "Restored.")},
                            body={"type": "object", "required": ["at"], "additionalProperties": False,
                                  "properties": {"at": {"type": "string", "format": "date-time",
                                                        "description": "RFC 3339, between the tenant's creation "
                                                                       "and now"}}},
                            params=[_ID], errors=(400, 401, 403, 404, 409, 503)),
            },
            "/api/cp/tenants/{id}/superusers": {
                "put": _op("Create or update a superuser of the tenant's PocketBase",
                           {"200": _json({"type": "object", "required": ["tenantId", "email"]}, "Upserted.")},
                           body=create["properties"]["superuser"], params=[_ID],
                           errors=(400, 401, 403, 404, 503)),
            },
            "/api/cp/tenants/{id}/data": {
                "put": {**_op("Import a PocketBase data.db, or a tar of a data dir (data.db and storage/), into a "
                              "tenant without data",
                              {"200": _json(_ref("Tenant"), "Imported.")}, params=[_ID],
                              errors=(400, 401, 403, 404, 409, 413, 503)),
                        "requestBody": {"required": True, "content": {
                            "application/vnd.sqlite3": {"schema": {"type": "string", "format": "binary"}},
                            "application/x-tar": {"schema": {"type": "string", "format": "binary"}}}}},
                "get": _op("Export a consistent snapshot of the tenant's data.db (files=1: a tar of it and the "
                           "tenant's files under storage/)",
                           {"200": {"description": "The database file, or the tar.", "content": {
                               "application/vnd.sqlite3": {"schema": {"type": "string", "format": "binary"}},
                               "application/x-tar": {"schema": {"type": "string", "format": "binary"}}}}},
                           params=[_ID, {"name": "files", "in": "query", "schema": {"type": "string", "enum": ["1"]}}],
                           errors=(401, 403, 404, 503)),
            },
            "/api/cp/nodes": {
                "get": _op("List tenant nodes", {"200": _json(
                    {"type": "object", "required": ["items"],
                     "properties": {"items": {"type": "array", "items": _ref("Node")}}}, "Nodes.")},
                    errors=(401, 403)),
            },
            "/api/cp/nodes/{id}": {
                "put": _op("Register a tenant node (cluster token)", {"200": _json(_ref("Node"), "Registered.")},
                           body={"type": "object", "required": ["address", "maxTenants"],
                                 "additionalProperties": False,
                                 "properties": {"address": {"type": "string"},
                                                "maxTenants": {"type": "integer", "minimum": 1}}},
                           params=[_ID], security="cluster", errors=(400, 401, 403, 503)),
                "delete": _op("Forget a down node without tenants", no_content, params=[_ID],
                              errors=(401, 403, 404, 409, 503)),
            },
            "/api/cp/nodes/{id}/heartbeat": {
                "post": _op("Node heartbeat with per-tenant usage (cluster token)",
                            {"200": _json(assignments, "What the node must serve.")},
                            body={"type": "object", "additionalProperties": True,
                                  "properties": {"openTenants": {"type": "integer"},
                                                 "usage": {"type": "object"}}},
                            params=[_ID], security="cluster", errors=(400, 401, 403, 404, 503)),
            },
            "/api/cp/routes": {
                "get": _op("Routing table; with since=V, long-polls until the version exceeds V",
                           {"200": _json(route_table, "The table.")},
                           params=[{"name": "since", "in": "query", "schema": {"type": "integer"}},
                                   {"name": "timeout", "in": "query",
                                    "schema": {"type": "integer", "minimum": 0, "maximum": 60}}],
                           security="either", errors=(400, 401, 403)),
            },
            "/api/cp/openapi.json": {
                "get": _op("This document", {"200": _json({"type": "object"}, "OpenAPI 3.1.")},
                           security="either", errors=(401, 403)),
            },
        },
        "components": {
            "securitySchemes": {
                "adminToken": {"type": "http", "scheme": "bearer", "description": "the admin token"},
                "clusterToken": {"type": "http", "scheme": "bearer", "description": "the cluster token"},
            },
            "schemas": {
                "Tenant": tenant,
                "Node": node,
                "Error": {
                    "type": "object",
                    "required": ["status", "message", "data"],
                    "properties": {"status": {"type": "integer"}, "message": {"type": "string"},
                                   "data": {"type": "object"}},
                },
            },
            "responses": {"Error": _json(_ref("Error"), "PocketBase-shaped error.")},
        },
    }
