//! Tenant routing: tenant-id validation, request -> tenant resolution and the versioned routing table.
//!
//! Core ([`RoutingCore`], [`parse_target`], [`is_valid_tenant_id`]) is plain Rust. The table is an
//! immutable snapshot behind an [`ArcSwap`]: readers load it lock-free and never block; writers
//! serialise on a mutex, build a new snapshot and swap it in, so readers always see either the old or
//! the new snapshot, never a mix.
//!
//! A snapshot's map ([`RouteMap`]) is split into about `len / 128` hash-table shards, each behind its
//! own `Arc`, so a new snapshot shares every shard a patch does not touch with the old one: a patch
//! copies the shard pointers plus the shards it touches (for one route in 10k: 128 pointers and ~80
//! routes, instead of all 10k routes), and a lookup is one hash, one shard pointer and one
//! hash-table probe.
//!
//! The Python wrapper [`RoutingTable`] stores, next to every route, the Python objects it hands out
//! (the tenant id `str` and the `(address, epoch, active)` tuple), so `get`/`resolve` of a known tenant
//! return them with a reference-count increment instead of allocating.

use std::borrow::Cow;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use parking_lot::Mutex;
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

create_exception!(
    pbfast._native,
    InvalidTenantId,
    PyValueError,
    "A request named a tenant whose id is not a DNS label (``^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$``)."
);

// ---------------------------------------------------------------------------------------------
// Core
// ---------------------------------------------------------------------------------------------

/// True when `id` is a DNS label: 1-63 bytes of `[a-z0-9-]`, not starting or ending with `-`.
pub fn is_valid_tenant_id(id: &str) -> bool {
    let b = id.as_bytes();
    if b.is_empty() || b.len() > 63 {
        return false;
    }
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    alnum(b[0]) && alnum(b[b.len() - 1]) && b.iter().all(|&c| alnum(c) || c == b'-')
}

/// A tenant id that is not a DNS label (the offending id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidId(pub String);

impl fmt::Display for InvalidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid tenant id '{}': must be a DNS label", self.0)
    }
}

impl std::error::Error for InvalidId {}

fn check_id(id: &str) -> Result<(), InvalidId> {
    if is_valid_tenant_id(id) {
        Ok(())
    } else {
        Err(InvalidId(id.to_owned()))
    }
}

/// Normalise a base domain: trimmed, lower-cased, without leading dots.
pub fn normalize_base_domain(base_domain: &str) -> String {
    base_domain
        .trim()
        .to_lowercase()
        .trim_start_matches('.')
        .to_owned()
}

/// Where a resolved request goes on the tenant's backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardPath<'a> {
    /// The request path, unchanged (tenant named by the Host header).
    Unchanged,
    /// A suffix of the request path (tenant named by `/t/{id}`); `"/"` when nothing followed the id.
    Slice(&'a str),
}

/// A request's tenant and forward path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    pub tenant: Cow<'a, str>,
    pub forward: ForwardPath<'a>,
}

/// Find the tenant a request names (see `RoutingTable.resolve` in the `.pyi`).
///
/// `base_domain` must already be normalised ([`normalize_base_domain`]).
pub fn parse_target<'a>(
    path: &'a str,
    host: Option<&'a str>,
    base_domain: &str,
) -> Result<Option<Target<'a>>, InvalidId> {
    if let Some(host) = host {
        if !host.is_empty() && !base_domain.is_empty() && !host.starts_with('[') {
            if let Some(tenant) = tenant_from_host(host, base_domain)? {
                return Ok(Some(Target {
                    tenant,
                    forward: ForwardPath::Unchanged,
                }));
            }
        }
    }
    let Some(rest) = path.strip_prefix("/t/") else {
        return Ok(None);
    };
    let (id, forward) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    check_id(id)?;
    Ok(Some(Target {
        tenant: Cow::Borrowed(id),
        forward: ForwardPath::Slice(forward),
    }))
}

fn tenant_from_host<'a>(host: &'a str, base: &str) -> Result<Option<Cow<'a, str>>, InvalidId> {
    let needs_lower = host.bytes().any(|c| c.is_ascii_uppercase() || c >= 0x80);
    let lower: Cow<'a, str> = if needs_lower {
        Cow::Owned(host.to_lowercase())
    } else {
        Cow::Borrowed(host)
    };
    let h: &str = &lower;
    let h = match h.find(':') {
        Some(i) => &h[..i],
        None => h,
    };
    if h.len() <= base.len() || !h.ends_with(base) || h.as_bytes()[h.len() - base.len() - 1] != b'.'
    {
        // Includes `h == base` (the gateway itself) and any foreign host: fall through to the path.
        return Ok(None);
    }
    let end = h.len() - base.len() - 1;
    let label = &h[..end];
    if label.contains('.') || !is_valid_tenant_id(label) {
        return Err(InvalidId(label.to_owned()));
    }
    Ok(Some(match lower {
        Cow::Borrowed(s) => Cow::Borrowed(&s[..end]),
        Cow::Owned(s) => Cow::Owned(s[..end].to_owned()),
    }))
}

/// A tenant's route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub address: Arc<str>,
    pub epoch: u64,
    pub active: bool,
}

/// A route plus caller-defined data kept with it (the Python wrapper keeps its cached objects).
#[derive(Debug, Clone)]
pub struct Entry<P> {
    pub route: Route,
    pub extra: P,
}

type Slot<P> = (Arc<str>, Entry<P>);
type Shard<P> = hashbrown::HashTable<Slot<P>>;

/// Routes per shard a [`RouteMap`] aims at (a shard holds between a quarter and twice as many): a
/// one-route patch copies about `len / SHARD_TARGET` shard pointers plus one shard. 128 balances
/// that copy against lookups, which touch one shard header more than a single table would.
const SHARD_TARGET: usize = 128;
/// Shard indexes come from hash bits 32..44, clear of the bits hashbrown uses inside a shard (the low
/// bits for the bucket, the top 7 for the control byte).
const MAX_SHARDS: usize = 1 << 12;
const SHARD_SHIFT: u32 = 32;

/// The shard count (a power of two) for `len` routes.
fn shard_count(len: usize) -> usize {
    (len / SHARD_TARGET).next_power_of_two().min(MAX_SHARDS)
}

/// Map tenant id -> entry whose clones share structure: the map is a power-of-two number of
/// hash-table shards behind `Arc`s, and a write through a clone copies only the shards it touches
/// (copy-on-write), so a map that was published is never changed.
///
/// Writes re-shard (O(n), amortised O(1)) when the length drifts 4x from the shard count's target.
#[derive(Clone)]
pub struct RouteMap<P> {
    hasher: foldhash::fast::RandomState,
    len: usize,
    shards: Box<[Arc<Shard<P>>]>,
}

impl<P> Default for RouteMap<P> {
    fn default() -> Self {
        Self::with_shards(Default::default(), 1)
    }
}

impl<P: fmt::Debug> fmt::Debug for RouteMap<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<P> RouteMap<P> {
    fn with_shards(hasher: foldhash::fast::RandomState, count: usize) -> Self {
        debug_assert!(count.is_power_of_two() && count <= MAX_SHARDS);
        RouteMap {
            hasher,
            len: 0,
            shards: (0..count).map(|_| Arc::new(Shard::new())).collect(),
        }
    }

    #[inline]
    fn hash(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
    }

    #[inline]
    fn shard_index(&self, hash: u64) -> usize {
        (hash >> SHARD_SHIFT) as usize & (self.shards.len() - 1)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn get(&self, id: &str) -> Option<&Entry<P>> {
        let hash = self.hash(id);
        self.shards[self.shard_index(hash)]
            .find(hash, |(k, _)| **k == *id)
            .map(|(_, e)| e)
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    /// Every `(id, entry)`, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &Entry<P>)> {
        self.shards
            .iter()
            .flat_map(|s| s.iter().map(|(k, e)| (k, e)))
    }

    pub fn values(&self) -> impl Iterator<Item = &Entry<P>> {
        self.shards.iter().flat_map(|s| s.iter().map(|(_, e)| e))
    }
}

impl<P: Clone> RouteMap<P> {
    /// A map of `rows` (a later row for the same id wins), sharded for their number.
    pub fn from_rows(rows: impl ExactSizeIterator<Item = (Arc<str>, Entry<P>)>) -> Self {
        Self::build(Default::default(), rows.len(), rows)
    }

    fn build(
        hasher: foldhash::fast::RandomState,
        len_hint: usize,
        rows: impl Iterator<Item = (Arc<str>, Entry<P>)>,
    ) -> Self {
        let count = shard_count(len_hint);
        let per_shard = len_hint / count + len_hint / count / 4 + 1;
        let mut shards: Vec<Shard<P>> = (0..count)
            .map(|_| Shard::with_capacity(per_shard))
            .collect();
        let mut map = RouteMap {
            hasher,
            len: 0,
            shards: Box::new([]),
        };
        for (id, entry) in rows {
            let hash = map.hasher.hash_one(&*id);
            let shard = &mut shards[(hash >> SHARD_SHIFT) as usize & (count - 1)];
            if Self::put(&map.hasher, shard, hash, id, entry).is_none() {
                map.len += 1;
            }
        }
        map.shards = shards.into_iter().map(Arc::new).collect();
        map
    }

    fn put(
        hasher: &foldhash::fast::RandomState,
        shard: &mut Shard<P>,
        hash: u64,
        id: Arc<str>,
        entry: Entry<P>,
    ) -> Option<Entry<P>> {
        match shard.find_mut(hash, |(k, _)| *k == id) {
            Some((_, old)) => Some(std::mem::replace(old, entry)),
            None => {
                shard.insert_unique(hash, (id, entry), |(k, _)| hasher.hash_one(&**k));
                None
            }
        }
    }

    /// Insert or replace; copies the id's shard first when another map shares it.
    pub fn insert(&mut self, id: Arc<str>, entry: Entry<P>) -> Option<Entry<P>> {
        let hash = self.hash(&id);
        let i = self.shard_index(hash);
        let shard = Arc::make_mut(&mut self.shards[i]);
        let old = Self::put(&self.hasher, shard, hash, id, entry);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Remove; copies the id's shard first when another map shares it (not when the id is absent).
    pub fn remove(&mut self, id: &str) -> Option<Entry<P>> {
        let hash = self.hash(id);
        let i = self.shard_index(hash);
        let eq = |(k, _): &Slot<P>| **k == *id;
        self.shards[i].find(hash, eq)?;
        let shard = Arc::make_mut(&mut self.shards[i]);
        let ((_, old), _) = shard.find_entry(hash, eq).ok()?.remove();
        self.len -= 1;
        Some(old)
    }

    /// Re-shard when the length has drifted 4x away from what the shard count is sized for.
    pub fn rebalance(&mut self) {
        let (want, have) = (shard_count(self.len), self.shards.len());
        if want >= have * 4 || want * 4 <= have {
            let rows = self.iter().map(|(k, e)| (k.clone(), e.clone()));
            *self = Self::build(self.hasher.clone(), self.len, rows);
        }
    }
}

/// One immutable version of the table.
#[derive(Debug)]
pub struct Snapshot<P> {
    pub version: u64,
    pub routes: RouteMap<P>,
}

/// A row for [`RoutingCore::replace`] / [`RoutingCore::patch`]: `(tenant_id, route, extra)`.
pub type Row<P> = (Arc<str>, Route, P);

/// Versioned tenant -> route map. Thread-safe: lock-free readers, writers serialised by a mutex.
pub struct RoutingCore<P> {
    current: ArcSwap<Snapshot<P>>,
    writer: Mutex<()>,
}

impl<P: Clone> Default for RoutingCore<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P: Clone> RoutingCore<P> {
    pub fn new() -> Self {
        RoutingCore {
            current: ArcSwap::from_pointee(Snapshot {
                version: 0,
                routes: RouteMap::default(),
            }),
            writer: Mutex::new(()),
        }
    }

    /// The current snapshot (lock-free; hold the guard briefly).
    #[inline]
    pub fn load(&self) -> Guard<Arc<Snapshot<P>>> {
        self.current.load()
    }

    pub fn version(&self) -> u64 {
        self.load().version
    }

    pub fn len(&self) -> usize {
        self.load().routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, id: &str) -> bool {
        self.load().routes.contains_key(id)
    }

    pub fn get(&self, id: &str) -> Option<Route> {
        self.load().routes.get(id).map(|e| e.route.clone())
    }

    /// Swap in a whole new snapshot. Validates every id first; on error nothing changes.
    pub fn replace(&self, rows: Vec<Row<P>>, version: u64) -> Result<(), InvalidId> {
        for (id, _, _) in &rows {
            check_id(id)?;
        }
        let routes = RouteMap::from_rows(
            rows.into_iter()
                .map(|(id, route, extra)| (id, Entry { route, extra })),
        );
        let new = Arc::new(Snapshot { version, routes });
        let old = {
            let _w = self.writer.lock();
            self.current.swap(new)
        };
        drop(old); // outside the writer lock
        Ok(())
    }

    /// Apply upserts, then removals, as one new snapshot with `version`. Validates every upserted
    /// id first; on error nothing changes.
    ///
    /// The new snapshot shares every shard the patch does not touch with the current one; readers
    /// of the current snapshot are unaffected, since a shared shard is copied before it is written.
    pub fn patch(
        &self,
        upserts: Vec<Row<P>>,
        removals: Vec<String>,
        version: u64,
    ) -> Result<(), InvalidId> {
        for (id, _, _) in &upserts {
            check_id(id)?;
        }
        let old = {
            let _w = self.writer.lock();
            let mut routes = self.current.load().routes.clone(); // copies shard pointers only
            for (id, route, extra) in upserts {
                routes.insert(id, Entry { route, extra });
            }
            for id in &removals {
                routes.remove(id.as_str());
            }
            routes.rebalance();
            self.current.swap(Arc::new(Snapshot { version, routes }))
        };
        drop(old);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Python wrapper
// ---------------------------------------------------------------------------------------------

/// Python objects cached with each route so lookups return them without allocating.
struct PyExtra {
    id: Py<PyString>,
    route: Py<PyTuple>,
}

type PyCore = RoutingCore<Arc<PyExtra>>;

fn invalid(e: InvalidId) -> PyErr {
    InvalidTenantId::new_err(e.to_string())
}

/// True when ``tenant_id`` is a DNS label: 1-63 chars of ``[a-z0-9-]``, not starting or ending with ``-``.
#[pyfunction]
#[pyo3(name = "is_valid_tenant_id")]
pub fn py_is_valid_tenant_id(tenant_id: &str) -> bool {
    is_valid_tenant_id(tenant_id)
}

/// Versioned map tenant id -> route ``(node_address, epoch, active)``.
///
/// Readers work on an immutable snapshot (an atomic pointer swap), so lookups never block writers and
/// writers never block lookups. Writers serialise among themselves. Thread-safe (frozen, Send + Sync).
#[pyclass(module = "pbfast._native", name = "RoutingTable", frozen)]
pub struct RoutingTable {
    base_domain: String,
    core: PyCore,
}

impl RoutingTable {
    /// Read `(tenant_id, node_address, epoch, active)` rows into core rows with cached objects.
    /// Runs before any lock is taken (iterating may run arbitrary Python code).
    fn rows(routes: &Bound<'_, PyAny>) -> PyResult<Vec<Row<Arc<PyExtra>>>> {
        let py = routes.py();
        let mut out = Vec::with_capacity(routes.len().unwrap_or(0));
        for row in routes.try_iter()? {
            let row = row?;
            let (id, address, epoch, active): (
                Bound<'_, PyString>,
                Bound<'_, PyString>,
                u64,
                bool,
            ) = row.extract()?;
            let id_str = id.to_str()?;
            check_id(id_str).map_err(invalid)?;
            let address_str = address.to_str()?;
            let route_tuple = PyTuple::new(
                py,
                [
                    address.clone().into_any(),
                    epoch.into_pyobject(py)?.into_any(),
                    active.into_pyobject(py)?.to_owned().into_any(),
                ],
            )?;
            out.push((
                Arc::from(id_str),
                Route {
                    address: Arc::from(address_str),
                    epoch,
                    active,
                },
                Arc::new(PyExtra {
                    // Own exact `str` copies (the caller's objects could be `str` subclasses).
                    id: PyString::new(py, id_str).unbind(),
                    route: route_tuple.unbind(),
                }),
            ));
        }
        Ok(out)
    }
}

#[pymethods]
impl RoutingTable {
    #[new]
    #[pyo3(signature = (base_domain = ""))]
    fn py_new(base_domain: &str) -> Self {
        RoutingTable {
            base_domain: normalize_base_domain(base_domain),
            core: PyCore::new(),
        }
    }

    /// Construction happens in ``__new__``; this no-op ``__init__`` only exists so that
    /// ``inspect.signature``/stubtest see the constructor's parameters on ``__init__`` (as in the stub).
    #[pyo3(signature = (*_args, **_kwargs))]
    fn __init__(&self, _args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) {}

    /// Version of the current snapshot (0 for a new table).
    #[getter]
    fn version(&self) -> u64 {
        self.core.version()
    }

    /// The normalised base domain (empty: host routing off).
    #[getter]
    pub(crate) fn base_domain(&self) -> &str {
        &self.base_domain
    }

    fn __len__(&self) -> usize {
        self.core.len()
    }

    fn __contains__(&self, tenant_id: &str) -> bool {
        self.core.contains(tenant_id)
    }

    /// The route ``(node_address, epoch, active)`` of a tenant, or None.
    fn get<'py>(&self, py: Python<'py>, tenant_id: &str) -> Option<Bound<'py, PyTuple>> {
        let snap = self.core.load();
        snap.routes
            .get(tenant_id)
            .map(|e| e.extra.route.bind(py).clone())
    }

    /// Swap in a whole new snapshot of ``(tenant_id, node_address, epoch, active)`` rows.
    ///
    /// Raises ``InvalidTenantId`` (and changes nothing) when a row's id is not a DNS label.
    fn replace(&self, routes: &Bound<'_, PyAny>, version: u64) -> PyResult<()> {
        let rows = Self::rows(routes)?;
        self.core.replace(rows, version).map_err(invalid)
    }

    /// Apply upserts and removals atomically as one new snapshot with ``version``.
    ///
    /// Raises ``InvalidTenantId`` (and changes nothing) when an upserted id is not a DNS label.
    fn patch(
        &self,
        upserts: &Bound<'_, PyAny>,
        removals: &Bound<'_, PyAny>,
        version: u64,
    ) -> PyResult<()> {
        let rows = Self::rows(upserts)?;
        let mut gone = Vec::new();
        for id in removals.try_iter()? {
            gone.push(id?.extract::<String>()?);
        }
        self.core.patch(rows, gone, version).map_err(invalid)
    }

    /// A copy of every route.
    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let snap = self.core.load_full_for_copy();
        let d = PyDict::new(py);
        for e in snap.routes.values() {
            d.set_item(e.extra.id.bind(py), e.extra.route.bind(py))?;
        }
        Ok(d)
    }

    /// Resolve a request to ``(tenant_id, forward_path, route_or_None)`` in one call.
    ///
    /// Host ``{id}.{base_domain}`` (case-insensitive, optional ``:port``) names the tenant and
    /// ``forward_path`` is ``path`` unchanged; otherwise ``/t/{id}[/rest]`` does and ``forward_path``
    /// is ``/rest`` (``/`` when empty). None when neither names a tenant; ``InvalidTenantId`` when
    /// the named id is not a DNS label.
    #[pyo3(signature = (path, host = None))]
    fn resolve<'py>(
        &self,
        py: Python<'py>,
        path: &Bound<'py, PyString>,
        host: Option<&str>,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let p = path.to_str()?;
        let target = match parse_target(p, host, &self.base_domain) {
            Ok(Some(t)) => t,
            Ok(None) => return Ok(None),
            Err(e) => return Err(invalid(e)),
        };
        let forward = match target.forward {
            ForwardPath::Unchanged => path.clone().into_any(),
            ForwardPath::Slice("/") => intern!(py, "/").clone().into_any(),
            ForwardPath::Slice(s) => PyString::new(py, s).into_any(),
        };
        let snap = self.core.load();
        let (tenant, route) = match snap.routes.get(&target.tenant) {
            Some(e) => (
                e.extra.id.bind(py).clone().into_any(),
                e.extra.route.bind(py).clone().into_any(),
            ),
            None => (
                PyString::new(py, &target.tenant).into_any(),
                py.None().into_bound(py),
            ),
        };
        drop(snap);
        Ok(Some(PyTuple::new(py, [tenant, forward, route])?))
    }
}

/// The native data path's view (no Python involved).
impl RoutingTable {
    /// A tenant's route (cloned out of the current snapshot).
    pub(crate) fn lookup(&self, tenant_id: &str) -> Option<Route> {
        self.core.get(tenant_id)
    }
}

impl<P: Clone> RoutingCore<P> {
    /// An owned handle on the current snapshot, for long iterations (does not pin a reader slot).
    pub fn load_full_for_copy(&self) -> Arc<Snapshot<P>> {
        self.current.load_full()
    }
}

// ---------------------------------------------------------------------------------------------
// Tests (pure Rust)
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread;

    fn route(addr: &str, epoch: u64) -> Route {
        Route {
            address: Arc::from(addr),
            epoch,
            active: true,
        }
    }

    fn row(id: &str, addr: &str, epoch: u64) -> Row<()> {
        (Arc::from(id), route(addr, epoch), ())
    }

    fn t<'a>(tenant: &'a str, forward: ForwardPath<'a>) -> Option<Target<'a>> {
        Some(Target {
            tenant: Cow::Borrowed(tenant),
            forward,
        })
    }

    const BASE: &str = "pb.example.com";

    #[test]
    fn valid_ids() {
        for ok in ["a", "0", "acme", "a-b", "a--b", "abc123", &"a".repeat(63)] {
            assert!(is_valid_tenant_id(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "-",
            "A",
            "Acme",
            "a_b",
            "a.b",
            "..",
            "a%2e",
            "é",
            "a b",
            &"a".repeat(64),
        ] {
            assert!(!is_valid_tenant_id(bad), "{bad}");
        }
    }

    #[test]
    fn base_domain_normalised() {
        assert_eq!(normalize_base_domain(".PB.Example.com"), "pb.example.com");
        assert_eq!(normalize_base_domain(""), "");
    }

    #[test]
    fn resolve_path() {
        use ForwardPath::*;
        assert_eq!(
            parse_target("/t/acme/api/health", None, BASE),
            Ok(t("acme", Slice("/api/health")))
        );
        assert_eq!(
            parse_target("/t/acme", None, BASE),
            Ok(t("acme", Slice("/")))
        );
        assert_eq!(
            parse_target("/t/acme/", None, BASE),
            Ok(t("acme", Slice("/")))
        );
        assert_eq!(parse_target("/t/a//b", None, ""), Ok(t("a", Slice("//b"))));
        assert_eq!(parse_target("/api/health", None, BASE), Ok(None));
        assert_eq!(parse_target("/t", None, BASE), Ok(None));
        assert_eq!(parse_target("/tx/acme", None, BASE), Ok(None));
        assert_eq!(parse_target("", None, BASE), Ok(None));
        for bad in [
            "/t/",
            "/t//x",
            "/t/Acme/x",
            "/t/../x",
            "/t/a%2eb/x",
            "/t/-a",
        ] {
            assert!(parse_target(bad, None, BASE).is_err(), "{bad}");
        }
        assert_eq!(
            parse_target("/t/Acme/x", None, BASE),
            Err(InvalidId("Acme".into()))
        );
    }

    #[test]
    fn resolve_host() {
        use ForwardPath::*;
        assert_eq!(
            parse_target("/api/health", Some("Acme.PB.example.com:8080"), BASE),
            Ok(t("acme", Unchanged))
        );
        assert_eq!(
            parse_target("/x", Some("acme.pb.example.com"), BASE),
            Ok(t("acme", Unchanged))
        );
        // Host wins over the path.
        assert_eq!(
            parse_target("/t/other/x", Some("acme.pb.example.com"), BASE),
            Ok(t("acme", Unchanged))
        );
        assert_eq!(
            parse_target("/x", Some("a.b.pb.example.com"), BASE),
            Err(InvalidId("a.b".into()))
        );
        assert!(parse_target("/x", Some(".pb.example.com"), BASE).is_err());
        assert!(parse_target("/x", Some("a_b.pb.example.com"), BASE).is_err());
        // The gateway itself, foreign hosts, IPv6 literals and disabled host routing fall through.
        assert_eq!(
            parse_target("/t/acme/x", Some("PB.example.com:443"), BASE),
            Ok(t("acme", Slice("/x")))
        );
        assert_eq!(parse_target("/x", Some("pb.example.com"), BASE), Ok(None));
        assert_eq!(parse_target("/x", Some("evil.com"), BASE), Ok(None));
        assert_eq!(parse_target("/x", Some("xpb.example.com"), BASE), Ok(None));
        assert_eq!(parse_target("/x", Some("[::1]:8080"), BASE), Ok(None));
        assert_eq!(parse_target("/x", Some(""), BASE), Ok(None));
        assert_eq!(
            parse_target("/x", Some("acme.pb.example.com"), ""),
            Ok(None)
        );
        assert_eq!(
            parse_target("/t/acme", Some("[::1]"), BASE),
            Ok(t("acme", Slice("/")))
        );
    }

    #[test]
    fn table_replace_patch_get() {
        let c: RoutingCore<()> = RoutingCore::new();
        assert_eq!(c.version(), 0);
        assert!(c.is_empty());
        c.replace(vec![row("a", "n1", 1), row("b", "n2", 2)], 5)
            .unwrap();
        assert_eq!(c.version(), 5);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("a"), Some(route("n1", 1)));
        assert!(c.contains("b"));
        assert!(!c.contains("c"));

        c.patch(
            vec![row("c", "n3", 3), row("a", "n9", 9)],
            vec!["b".into(), "zz".into()],
            3,
        )
        .unwrap();
        assert_eq!(c.version(), 3, "version is taken as given");
        assert_eq!(c.get("a"), Some(route("n9", 9)));
        assert_eq!(c.get("b"), None);
        assert_eq!(c.get("c"), Some(route("n3", 3)));

        let err = c.patch(
            vec![row("ok", "n", 1), row("Bad", "n", 1)],
            vec!["a".into()],
            9,
        );
        assert_eq!(err, Err(InvalidId("Bad".into())));
        let err = c.replace(vec![row("x", "n", 1), row("", "n", 1)], 9);
        assert_eq!(err, Err(InvalidId("".into())));
        assert_eq!(c.version(), 3, "nothing changed");
        assert_eq!(c.len(), 2);
        assert!(c.contains("a"));

        c.replace(vec![], 10).unwrap();
        assert!(c.is_empty());
        assert_eq!(c.version(), 10);
    }

    /// Readers during concurrent writers always see a consistent snapshot.
    #[test]
    fn readers_during_writes() {
        let c: Arc<RoutingCore<()>> = Arc::new(RoutingCore::new());
        let ids: Vec<String> = (0..1000).map(|i| format!("t{i}")).collect(); // 8 shards
        let rows = |v: u64| -> Vec<Row<()>> { ids.iter().map(|id| row(id, "n", v)).collect() };
        c.replace(rows(0), 0).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let c = c.clone();
                let stop = stop.clone();
                thread::spawn(move || {
                    let mut seen = 0u64;
                    let mut last = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let s = c.load();
                        assert_eq!(s.routes.len(), 1000);
                        assert!(s.version >= last, "versions only grow in this test");
                        last = s.version;
                        for e in s.routes.values() {
                            assert_eq!(e.route.epoch, s.version, "snapshot mixes versions");
                        }
                        seen += 1;
                    }
                    seen
                })
            })
            .collect();
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let c = c.clone();
                let ids = ids.clone();
                thread::spawn(move || {
                    for i in 0..300u64 {
                        // The test's writers take turns so versions grow and every snapshot has
                        // epoch == version (the table itself requires neither).
                        let _g = WRITER_TURN.lock();
                        let nv = c.version() + 1;
                        let rows = ids.iter().map(|id| row(id, "n", nv)).collect();
                        if i % 2 == 0 {
                            c.replace(rows, nv).unwrap();
                        } else {
                            c.patch(rows, vec!["absent".into()], nv).unwrap();
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    }

    static WRITER_TURN: Mutex<()> = Mutex::new(());

    /// Patches match a plain `HashMap` model through growth (re-sharding up from one shard) and
    /// shrinkage, and a snapshot taken before a patch never changes (the new snapshot shares shards
    /// with it but copies one before writing it).
    #[test]
    fn patch_matches_model_and_old_snapshots_are_isolated() {
        use std::collections::HashMap;

        let c: RoutingCore<u64> = RoutingCore::new();
        let id = |i: u64| format!("t{i}");
        let entry = |i: u64, v: u64| (Arc::<str>::from(id(i)), route(&format!("n{v}"), v), v);
        let mut model: HashMap<String, u64> = HashMap::new();
        let mut held = Vec::new(); // (snapshot, model at its version)
        let mut rng = 0x2545_f491_4f6c_dd1du64; // xorshift: deterministic, no dev-dependency
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut shard_counts = Vec::new();
        let mut max_len = 0;
        for v in 1..1500u64 {
            // Grow to ~2500 routes, then shrink to a few dozen: both directions re-shard.
            let (ups, rms) = if v < 1000 {
                (1 + next() % 8, next() % 3)
            } else {
                (next() % 2, 30)
            };
            let upserts: Vec<_> = (0..ups).map(|_| entry(next() % 4000, v)).collect();
            let removals: Vec<String> = (0..rms).map(|_| id(next() % 4000)).collect();
            for (k, _, _) in &upserts {
                model.insert(k.to_string(), v);
            }
            for k in &removals {
                model.remove(k);
            }
            c.patch(upserts, removals, v).unwrap();

            let snap = c.load_full_for_copy();
            assert_eq!(snap.version, v);
            assert_eq!(snap.routes.len(), model.len());
            shard_counts.push(snap.routes.shards.len());
            max_len = max_len.max(snap.routes.len());
            if v % 50 == 0 {
                held.push((snap, model.clone()));
            }
        }
        let check = |routes: &RouteMap<u64>, model: &HashMap<String, u64>| {
            assert_eq!(routes.len(), model.len());
            assert_eq!(routes.iter().count(), model.len());
            for (k, e) in routes.iter() {
                assert_eq!(model.get(&**k), Some(&e.extra), "{k}");
                assert_eq!(e.route, route(&format!("n{}", e.extra), e.extra));
            }
            for i in 0..4000 {
                let k = id(i);
                assert_eq!(routes.contains_key(&k), model.contains_key(&k), "{k}");
            }
        };
        check(&c.load().routes, &model);
        assert!(held.len() > 20);
        for (snap, at) in &held {
            check(&snap.routes, at);
        }
        for (k, v) in &model {
            assert_eq!(c.get(k), Some(route(&format!("n{v}"), *v)));
        }
        let peak = *shard_counts.iter().max().unwrap();
        assert!(max_len > 2000 && peak >= 16, "grew from 1 shard to {peak}");
        assert!(*shard_counts.last().unwrap() < peak, "shrank again");
    }

    /// `replace` shards for its row count, ids spread evenly, and a one-route patch shares all
    /// shards but one with the previous snapshot.
    #[test]
    fn replace_shards_and_patch_shares_untouched_shards() {
        let c: RoutingCore<()> = RoutingCore::new();
        let ids: Vec<String> = (0..10_000).map(|i| format!("tenant-{i}")).collect();
        c.replace(ids.iter().map(|i| row(i, "n", 1)).collect(), 1)
            .unwrap();
        let before = c.load_full_for_copy();
        let n = before.routes.shards.len();
        assert_eq!(n, shard_count(10_000));
        assert!(n >= 64);
        let sizes: Vec<usize> = before.routes.shards.iter().map(|s| s.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 10_000);
        let mean = 10_000 / n;
        assert!(sizes.iter().all(|&s| s > 0 && s < 4 * mean), "{sizes:?}");

        c.patch(vec![row("tenant-5", "m", 2)], vec![], 2).unwrap();
        let after = c.load_full_for_copy();
        let shared = (before.routes.shards.iter())
            .zip(after.routes.shards.iter())
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert_eq!(shared, n - 1);
        assert_eq!(before.routes.get("tenant-5").unwrap().route, route("n", 1));
        assert_eq!(after.routes.get("tenant-5").unwrap().route.epoch, 2);

        // Removing an absent id copies nothing; duplicate rows in `replace`: the last one wins.
        c.patch(vec![], vec!["nope".into()], 3).unwrap();
        let same = c.load_full_for_copy();
        assert!((after.routes.shards.iter())
            .zip(same.routes.shards.iter())
            .all(|(a, b)| Arc::ptr_eq(a, b)));
        c.replace(vec![row("a", "x", 1), row("a", "y", 2)], 4)
            .unwrap();
        assert_eq!((c.len(), c.get("a")), (1, Some(route("y", 2))));
    }

    /// Concurrent patches of disjoint ids are never lost (clone-modify-swap is serialised).
    #[test]
    fn concurrent_patches_not_lost() {
        let c: Arc<RoutingCore<()>> = Arc::new(RoutingCore::new());
        let hs: Vec<_> = (0..4)
            .map(|w| {
                let c = c.clone();
                thread::spawn(move || {
                    for i in 0..250 {
                        c.patch(vec![row(&format!("w{w}-{i}"), "n", 1)], vec![], 1)
                            .unwrap();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(c.len(), 1000);
    }
}
