"""The gateway's Prometheus metrics, rendered in the plain text exposition format
(:mod:`pbfast.prometheus`).

- ``pbfast_gateway_requests_total{class="2xx"}``: answered requests by status class,
- ``pbfast_gateway_request_duration_seconds``: histogram of the time from a request's arrival until the
  gateway finished answering it (an event stream counts with its whole life, in the top buckets),
- ``pbfast_gateway_upstream_errors_total{kind=...}``: failures talking to nodes (``connect``,
  ``connect_timeout``, ``timeout``, ``reset``, ``protocol``, ``breaker_open``, ``pool_exhausted``) and, on
  the native data path, to the gateway's Python side (``hand_over``),
- ``pbfast_gateway_retries_total{reason=...}``: requests sent again on a new route (``unreachable``,
  ``moved``), or to the Python side after a hand-over that could not have reached it (``hand_over``),
- ``pbfast_gateway_move_waits_total{outcome=...}``: requests held while their tenant was moving,
- ``pbfast_gateway_breaker_state{node=...,state=...}``: 1 for each node's current breaker state,
- ``pbfast_gateway_routing_table_version`` and ``pbfast_gateway_routing_table_tenants``,
- ``pbfast_gateway_native_handed_over_total``: requests the native data path handed to the Python side
  (counted once, by the side that answered them, in the figures above),
- ``pbfast_gateway_held_streams`` and ``pbfast_gateway_held_connections``: realtime streams the native path
  reads from remote nodes' stream holders, and the multiplexed connections they share (one per node and
  tenant),
- ``pbfast_gateway_held_records_dropped_total``: records a node sent on such a connection for a stream it
  was not given there (another tenant's, or none): dropped, never delivered; any is a node's bug.

With the native data path (``gateway`` mode) the figures are the sum of both sides: the native side times
a request until its answer's head is sent on, the Python side until its whole answer is.

Thread-safety: event loop only (plain counters, no locks).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from pbfast.prometheus import TextWriter

__all__ = ["LATENCY_BUCKETS", "GatewayMetrics"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
_BREAKER_STATES = ("closed", "open", "half-open")


class GatewayMetrics:
    """Counters and the latency histogram of one gateway."""

    def __init__(self) -> None:
        self.requests = [0] * len(_CLASSES)
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.latency_sum = 0.0
        self.upstream_errors: dict[str, int] = {}
        self.retries: dict[str, int] = {}
        self.move_waits: dict[str, int] = {}

    def observe(self, status: int, seconds: float) -> None:
        """One answered request: its status and the seconds it took."""
        index = status // 100 - 1
        if 0 <= index < len(_CLASSES):
            self.requests[index] += 1
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def upstream_error(self, kind: str) -> None:
        self.upstream_errors[kind] = self.upstream_errors.get(kind, 0) + 1

    def retry(self, reason: str) -> None:
        self.retries[reason] = self.retries.get(reason, 0) + 1

    def move_wait(self, outcome: str) -> None:
        self.move_waits[outcome] = self.move_waits.get(outcome, 0) + 1

    def render(self, breaker_states: dict[str, str], routes_version: int, tenants: int,
               native: dict[str, Any] | None = None) -> bytes:
        """The exposition text (``text/plain; version=0.0.4``); ``native``: the native data path's
        ``GatewayServer.stats()``, added to this side's counters."""
        requests, buckets, latency_sum = list(self.requests), list(self.buckets), self.latency_sum
        upstream_errors, retries = dict(self.upstream_errors), dict(self.retries)
        if native is not None:
            if tuple(native["bounds"]) != LATENCY_BUCKETS:
                raise ValueError("the native data path's latency buckets differ from LATENCY_BUCKETS")
            requests = [a + b for a, b in zip(requests, native["requests"])]
            buckets = [a + b for a, b in zip(buckets, native["buckets"])]
            latency_sum += native["latency_sum"]
            for totals, extra in ((upstream_errors, native["upstream_errors"]), (retries, native["retries"])):
                for key, count in extra.items():
                    if count:
                        totals[key] = totals.get(key, 0) + count
        out = TextWriter()
        out.family("pbfast_gateway_requests_total", "counter", "Requests answered by the gateway, by status class.",
                   [({"class": name}, count) for name, count in zip(_CLASSES, requests)])
        out.histogram("pbfast_gateway_request_duration_seconds",
                      "Time from a request's arrival until it was answered.", LATENCY_BUCKETS, buckets, latency_sum)
        for metric, label, values, text in (
                ("pbfast_gateway_upstream_errors_total", "kind", upstream_errors,
                 "Failures talking to tenant nodes, by kind."),
                ("pbfast_gateway_retries_total", "reason", retries,
                 "Requests sent again on a newer route, by reason."),
                ("pbfast_gateway_move_waits_total", "outcome", self.move_waits,
                 "Requests held while their tenant was moving, by outcome.")):
            out.family(metric, "counter", text, [({label: key}, count) for key, count in sorted(values.items())])
        out.family("pbfast_gateway_breaker_state", "gauge",
                   "Circuit breaker state of each tenant node (1 = current).",
                   [({"node": node, "state": name}, int(name == state))
                    for node, state in sorted(breaker_states.items()) for name in _BREAKER_STATES])
        out.single("pbfast_gateway_routing_table_version", "gauge", "Version of the gateway's routing table.",
                   routes_version)
        out.single("pbfast_gateway_routing_table_tenants", "gauge", "Tenants in the gateway's routing table.",
                   tenants)
        if native is not None:
            out.single("pbfast_gateway_native_handed_over_total", "counter",
                       "Requests the native data path handed to the gateway's Python side.", native["handed_over"])
            held = native.get("held")
            if held is not None:
                out.single("pbfast_gateway_held_streams", "gauge",
                           "Realtime streams read from nodes' stream holders over multiplexed connections.",
                           held["streams"])
                out.single("pbfast_gateway_held_connections", "gauge",
                           "Multiplexed connections to nodes' stream holders (one per node and tenant).",
                           held["connections"])
                out.single("pbfast_gateway_held_records_dropped_total", "counter",
                           "Records a node sent for a stream its connection was not given (dropped).",
                           held["foreign_records"])
        return out.render()
