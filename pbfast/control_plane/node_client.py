"""How the control plane asks a tenant node to act on one tenant: release it, upsert its superuser,
import or export its database, try a restore of its replica at a point in time. Nodes in this process
(all-in-one) are called directly, and fail as they would over HTTP; others over HTTP with the cluster token.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

import httpx

from pbfast.http import ApiError
from pbfast.logs import component_logger

__all__ = ["LocalNode", "NodeClient", "NodeError"]

log = component_logger("ControlPlane")

CHUNK = 1 << 20
RESTORE_CHECK_TIMEOUT_SECONDS = 300.0  # a trial restore downloads the whole database
RELEASE_TIMEOUT_SECONDS = 45.0  # above the node's final sync bound (30 s) plus its unregister


class NodeError(RuntimeError):
    """The node could not be reached or refused; ``status`` is its HTTP status (503 when unreachable) and
    ``data`` the ``data`` of its PocketBase-shaped error body (per-field ``{"code", "message"}``; empty when
    it sent none). ``answered`` is False when no answer came (connection failed or lost, timed out): the
    node may then have done what it was asked, or part of it."""

    def __init__(self, status: int, message: str, data: dict[str, Any] | None = None, answered: bool = True) -> None:
        self.status = status
        self.data: dict[str, Any] = data or {}
        self.answered = answered
        super().__init__(message)

    def field_code(self, name: str) -> str | None:
        """The ``code`` of the node's error about field ``name`` (``data[name].code``), if it gave one."""
        problem = self.data.get(name)
        code = problem.get("code") if isinstance(problem, dict) else None
        return code if isinstance(code, str) else None


class LocalNode(Protocol):
    """The in-process surface of :class:`pbfast.tenant_node.app.TenantNodeApp` the control plane uses."""

    async def release(self, tenant_id: str, epoch: int) -> None: ...

    async def upsert_tenant_superuser(self, tenant_id: str, email: str, password_hash: str) -> None: ...

    async def import_data(self, tenant_id: str, chunks: AsyncIterator[bytes]) -> None: ...

    def export_chunks(self, tenant_id: str, with_files: bool = False) -> AsyncIterator[bytes]: ...

    async def restore_check(self, tenant_id: str, incarnation: str, at: str) -> int: ...


class NodeClient:
    """Thread-safety: event loop only."""

    def __init__(self, cluster_token: str, local: dict[str, LocalNode]) -> None:
        self._local = local
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=2.0),
                                       headers={"authorization": f"Bearer {cluster_token}"})

    async def _call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, url, **kwargs)
        except httpx.HTTPError as err:
            raise NodeError(503, f"{url}: {type(err).__name__}", answered=False) from err
        if response.status_code >= 400:
            try:
                body = response.json() if response.content else {}
            except ValueError:  # not JSON: a proxy's page, say
                body = {}
            message = body.get("message") if isinstance(body, dict) else None
            data = body.get("data") if isinstance(body, dict) else None
            raise NodeError(response.status_code,
                            str(message or response.text[:200] or f"{url} answered {response.status_code}"),
                            data if isinstance(data, dict) else None)
        return response

    async def release(self, address: str, tenant_id: str, epoch: int) -> None:
        node = self._local.get(address)
        if node is not None:
            with _as_node_errors():
                await node.release(tenant_id, epoch)
            return
        await self._call("POST", f"{address}/api/node/tenants/{tenant_id}/release", json={"epoch": epoch})

    async def upsert_superuser(self, address: str, tenant_id: str, email: str, password_hash: str) -> None:
        node = self._local.get(address)
        if node is not None:
            with _as_node_errors():
                await node.upsert_tenant_superuser(tenant_id, email, password_hash)
            return
        await self._call("PUT", f"{address}/api/node/tenants/{tenant_id}/superuser",
                         json={"email": email, "passwordHash": password_hash})

    async def import_data(self, address: str, tenant_id: str, chunks: AsyncIterator[bytes]) -> None:
        node = self._local.get(address)
        if node is not None:
            with _as_node_errors():
                await node.import_data(tenant_id, chunks)
            return
        await self._call("PUT", f"{address}/api/node/tenants/{tenant_id}/data", content=chunks,
                         headers={"content-type": "application/vnd.sqlite3"})

    async def export_chunks(self, address: str, tenant_id: str, with_files: bool = False) -> AsyncIterator[bytes]:
        node = self._local.get(address)
        if node is not None:
            with _as_node_errors():
                async for chunk in node.export_chunks(tenant_id, with_files):
                    yield chunk
            return
        query = "?files=1" if with_files else ""
        request = self._http.build_request("GET", f"{address}/api/node/tenants/{tenant_id}/data{query}")
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as err:
            raise NodeError(503, f"{address}: {type(err).__name__}") from err
        try:
            if response.status_code >= 400:
                await response.aread()
                raise NodeError(response.status_code, response.text[:200])
            async for chunk in response.aiter_bytes(CHUNK):
                yield chunk
        finally:
            await response.aclose()

    async def restore_check(self, address: str, tenant_id: str, incarnation: str, at: str,
                            timeout: float = RESTORE_CHECK_TIMEOUT_SECONDS) -> int:
        """Have the node restore ``incarnation``'s replica of the tenant as of ``at`` (RFC 3339) into a
        temporary file, check it and discard it; returns the restored database's size in bytes. Raises
        NodeError with the node's answer: 400 with ``data.incarnation.code == "validation_no_replica"`` when
        nothing of that incarnation was ever replicated, 400 with ``data.at.code == "validation_no_state_at"``
        when its replica holds no restorable state at that time, 5xx when it could not be read."""
        node = self._local.get(address)
        if node is not None:
            with _as_node_errors():
                return await node.restore_check(tenant_id, incarnation, at)
        url = f"{address}/api/node/tenants/{tenant_id}/restore-check"
        response = await self._call("POST", url, json={"incarnation": incarnation, "at": at}, timeout=timeout)
        try:
            size = response.json()["bytes"]
        except (ValueError, KeyError, TypeError) as err:
            raise NodeError(502, f"{url}: unexpected answer {response.text[:200]!r}") from err
        if isinstance(size, bool) or not isinstance(size, int):
            raise NodeError(502, f"{url}: unexpected answer {response.text[:200]!r}")
        return size

    async def aclose(self) -> None:
        await self._http.aclose()


@contextlib.contextmanager
def _as_node_errors() -> Iterator[None]:
    """A node in this process fails as one over HTTP would: its :class:`ApiError` as the status it would
    answer, anything else as the 500 its routes would turn it into."""
    try:
        yield
    except NodeError:
        raise
    except ApiError as err:
        raise NodeError(err.status, err.message, err.data) from err
    except Exception as err:  # noqa: BLE001 - the node's own failure, reported to the caller like its 500
        log.exception("the node in this process failed")
        raise NodeError(500, f"{type(err).__name__}: {err}") from err
