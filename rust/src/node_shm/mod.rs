//! What a tenant node's main process shares with its worker processes, in one memfd both map
//! ([`region`]): which tenants the workers may serve and how ([`tenant_table`], read lock-free on every
//! request), the quota counters every worker counts against ([`quotas`]), which worker holds which
//! tenant's connection ([`acks`]), per-worker counters for `/metrics` ([`counters`]), and the rate
//! limiter's windows every process counts in ([`rate_limits`]). Entries are found by tenant id
//! ([`keys`]); only the main process adds or removes them (rate windows are claimed by any process).

pub mod acks;
pub mod counters;
pub mod keys;
pub mod quotas;
pub mod rate_limits;
pub mod region;
pub mod tenant_table;
