"""The hot-path primitives the servers use, implemented in Rust (``pbfast._native``).

This module is the typed public face of the private extension; see ``pbfast/_native.pyi`` for the full
contracts and :mod:`pbfast.reference` for pure-Python twins used by tests and benchmarks.
"""

from pbfast._native import (
    CircuitBreakers,
    InvalidTenantId,
    NodeSharedMemory,
    QuotaCounters,
    RateLimiter,
    RequestLogQueue,
    RoutingTable,
    SharedQuotas,
    SharedRateLimiter,
    SharedTenantTable,
    StreamHolder,
    TenantCache,
    WorkerAcks,
    WorkerCounters,
    bcrypt_check,
    bcrypt_check_pair,
    bcrypt_hash,
    hs256_sign,
    hs256_verify,
    is_valid_tenant_id,
    jwt_segments,
)

__all__ = [
    "CircuitBreakers",
    "InvalidTenantId",
    "NodeSharedMemory",
    "QuotaCounters",
    "RateLimiter",
    "RequestLogQueue",
    "RoutingTable",
    "SharedQuotas",
    "SharedRateLimiter",
    "SharedTenantTable",
    "StreamHolder",
    "TenantCache",
    "WorkerAcks",
    "WorkerCounters",
    "bcrypt_check",
    "bcrypt_check_pair",
    "bcrypt_hash",
    "hs256_sign",
    "hs256_verify",
    "is_valid_tenant_id",
    "jwt_segments",
]
