//! Tenant routing: tenant-id validation, request -> tenant resolution and the versioned routing table.
//!
//! Core ([`RoutingCore`], [`parse_target`], [`is_valid_tenant_id`]) is plain Rust; one file per part:
//!
//! - `tenant_id`: tenant-id validation ([`is_valid_tenant_id`], [`InvalidId`]);
//! - `target`: request -> tenant resolution ([`parse_target`], [`Target`], [`ForwardPath`]);
//! - `route_map`: the copy-on-write sharded map ([`RouteMap`] of [`Route`]s);
//! - `table`: the versioned table ([`RoutingCore`] of [`Snapshot`]s);
//! - `py`: the Python wrapper ([`RoutingTable`], [`InvalidTenantId`], `is_valid_tenant_id`).

mod py;
mod route_map;
mod table;
mod target;
mod tenant_id;

pub use py::{py_is_valid_tenant_id, InvalidTenantId, RoutingTable};
pub use route_map::{Entry, Route, RouteMap};
pub use table::{RoutingCore, Row, Snapshot};
pub use target::{normalize_base_domain, parse_target, ForwardPath, Target};
pub use tenant_id::{is_valid_tenant_id, InvalidId};
