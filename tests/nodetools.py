"""Helpers for tests that talk to tenant nodes directly: start a node with extra flags, send a tenant
request the way a gateway forwards it, read ``/metrics``, and cut a node off the network with a TCP
forwarder."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from cpcluster import ADMIN, CLUSTER_TOKEN, Start
from helpers import PbfastProcess, free_port

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$")


def start_node(start: Start, node_id: str, cp_addrs: str, data_dir: Path, extra: tuple[str, ...] = (),
               env: dict[str, str] | None = None) -> tuple[PbfastProcess, str]:
    """A ``tenant-node`` process talking to ``cp_addrs`` (``host:port,...``); returns it and its URL."""
    port = free_port()
    process = start(["serve", "--mode=tenant-node", f"--node-id={node_id}", f"--http-addr=127.0.0.1:{port}",
                     f"--control-plane-addrs={cp_addrs}", f"--cluster-token={CLUSTER_TOKEN}",
                     f"--data-dir={data_dir / node_id}", *extra], env=env)
    url = f"http://127.0.0.1:{port}"
    process.wait_healthy([url])
    return process, url


def tenant(cp_url: str, tenant_id: str) -> dict[str, Any]:
    response = httpx.get(f"{cp_url}/api/cp/tenants/{tenant_id}", headers=ADMIN)
    assert response.status_code == 200, response.text
    return dict(response.json())


def forwarded(node_url: str, tenant_id: str, epoch: int, method: str, path: str, token: str | None = None,
              json: Any = None, timeout: float = 10.0, raw_path: bool = False) -> httpx.Response:
    """One tenant request sent to a node the way a gateway forwards it (cluster token, route epoch, and with
    ``raw_path`` the path as the client spelt it, which the native gateway adds to a path holding a ``%``)."""
    headers = {"X-Pbfast-Cluster-Token": CLUSTER_TOKEN, "X-Pbfast-Epoch": str(epoch)}
    if raw_path:
        headers["X-Pbfast-Path"] = f"/t/{tenant_id}{path}"
    if token:
        headers["Authorization"] = token
    return httpx.request(method, f"{node_url}/t/{tenant_id}{path}", headers=headers, json=json, timeout=timeout)


def forwarded_ok(node_url: str, tenant_id: str, epoch: int, method: str, path: str, token: str | None = None,
                 json: Any = None, timeout: float = 10.0) -> httpx.Response:
    """:func:`forwarded`, retried while the node answers 503 (joining the cluster, restoring)."""
    deadline = time.monotonic() + timeout
    while True:
        response = forwarded(node_url, tenant_id, epoch, method, path, token, json)
        if response.status_code != 503 or time.monotonic() > deadline:
            assert response.status_code < 400, response.text
            return response
        time.sleep(0.05)


def scrape(node_url: str, token: str = CLUSTER_TOKEN, path: str = "/metrics") -> dict[str, float]:
    """The samples of a Prometheus text page: ``{'name{labels}': value}``."""
    response = httpx.get(node_url + path, headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for line in response.text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        samples[match.group(1)] = float(match.group(2))
    return samples


class Forwarder:
    """A TCP forwarder to ``127.0.0.1:target_port`` that can be cut like a network partition: open
    connections are dropped and new ones are accepted but never answered (packets lost), until healed."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.connected = True
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._blackholed: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                if not self.connected:
                    self._blackholed.append(client)
                    continue
                try:
                    upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
                except OSError:
                    client.close()
                    continue
                upstream.settimeout(None)
                self._open += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self._lock:
            self.connected = False
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def heal(self) -> None:
        with self._lock:
            self.connected = True
            for sock in self._blackholed:
                sock.close()
            self._blackholed.clear()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self.heal()
        self.listener.close()
