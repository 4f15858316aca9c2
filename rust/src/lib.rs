//! `pbfast._native`: per-request hot-path primitives for pbfast (spec: `pbfast/_native.pyi`).
//!
//! One concept per module, each a plain-Rust core (unit-tested with `cargo test`) plus a thin,
//! frozen, thread-safe `#[pyclass]` wrapper. This file only registers them.

pub mod append_synced;
pub mod bcrypt;
pub mod breaker;
pub mod create_files;
pub mod find_bytes;
pub mod fsync_at_once;
pub mod gateway;
pub mod host_sqlite;
pub mod jwt;
pub mod listen;
pub mod log_text;
pub mod ltx;
pub mod node_shm;
pub mod quota;
pub mod rate_limit;
pub mod request_log;
pub mod routing;
pub mod stream_holder;
pub mod tenant_cache;

use pyo3::prelude::*;

/// The extension's own allocations (the gateway's buffers, headers and tasks above all) go to
/// mimalloc: measured on the gateway's data path, glibc's malloc/free took ~8% of its CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[pymodule(gil_used = false)]
#[pyo3(name = "_native")]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("InvalidTenantId", py.get_type::<routing::InvalidTenantId>())?;
    m.add_function(wrap_pyfunction!(routing::py_is_valid_tenant_id, m)?)?;
    m.add_class::<routing::RoutingTable>()?;
    m.add_function(wrap_pyfunction!(find_bytes::py_find_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(create_files::py_create_files, m)?)?;
    m.add_function(wrap_pyfunction!(jwt::py_hs256_sign, m)?)?;
    m.add_function(wrap_pyfunction!(jwt::py_hs256_verify, m)?)?;
    m.add_function(wrap_pyfunction!(jwt::py_jwt_segments, m)?)?;
    m.add_function(wrap_pyfunction!(bcrypt::py_bcrypt_check, m)?)?;
    m.add_function(wrap_pyfunction!(bcrypt::py_bcrypt_hash, m)?)?;
    m.add_class::<quota::QuotaCounters>()?;
    m.add_class::<rate_limit::RateLimiter>()?;
    m.add_class::<request_log::RequestLogQueue>()?;
    m.add_class::<tenant_cache::TenantCache>()?;
    m.add_class::<breaker::CircuitBreakers>()?;
    m.add_class::<gateway::GatewayServer>()?;
    m.add_class::<gateway::in_process::InProcessQueue>()?;
    m.add_class::<gateway::handed_request::HandedRequest>()?;
    m.add_class::<gateway::handed_headers::HandedHeaders>()?;
    m.add_class::<node_shm::region::NodeSharedMemory>()?;
    m.add_class::<node_shm::tenant_table::SharedTenantTable>()?;
    m.add_class::<node_shm::quotas::SharedQuotas>()?;
    m.add_class::<node_shm::rate_limits::SharedRateLimiter>()?;
    m.add_class::<node_shm::acks::WorkerAcks>()?;
    m.add_class::<node_shm::counters::WorkerCounters>()?;
    m.add_class::<stream_holder::StreamHolder>()?;
    m.add("LtxError", py.get_type::<ltx::LtxError>())?;
    m.add_function(wrap_pyfunction!(ltx::py_restore_ltx, m)?)?;
    m.add_function(wrap_pyfunction!(host_sqlite::query_json::query_json, m)?)?;
    m.add_function(wrap_pyfunction!(host_sqlite::query_json::host_sqlite_version, m)?)?;
    m.add_class::<host_sqlite::record_plan::RecordPlan>()?;
    m.add_class::<host_sqlite::record_reader::RecordReader>()?;
    m.add_function(wrap_pyfunction!(host_sqlite::own_connection::own_connection_probe, m)?)?;
    // `add` keeps a module `__all__`, which the stub (`pbfast/_native.pyi`) does not declare.
    m.delattr("__all__")?;
    Ok(())
}
