//! The Python wrapper ([`RoutingTable`], `pbfast._native.RoutingTable`) of the routing table.
//!
//! [`RoutingTable`] stores, next to every route, the Python objects it hands out (the tenant id
//! `str` and the `(address, epoch, active)` tuple), so `get`/`resolve` of a known tenant return them
//! with a reference-count increment instead of allocating.

use std::sync::Arc;

use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use super::route_map::Route;
use super::table::{RoutingCore, Row};
use super::target::{normalize_base_domain, parse_target, ForwardPath};
use super::tenant_id::{check_id, is_valid_tenant_id, InvalidId};

create_exception!(
    pbfast._native,
    InvalidTenantId,
    PyValueError,
    "A request named a tenant whose id is not a DNS label (``^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$``)."
);

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
