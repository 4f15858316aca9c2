//! The headers of a request handed to the event loop in process, read as granian's RSGI scope headers are
//! (`get`, `items`, `in`, ... over the same `HeaderMap`: names lowercase, lookups case-insensitive, values
//! that are not visible ASCII left out as granian does), so that one handler serves both hand-overs.
//!
//! Thread-safety: frozen and read-only.

use http::HeaderMap;
use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::types::{PyIterator, PyList, PyString};

#[pyclass(module = "pbfast._native", name = "HandedHeaders", frozen)]
pub struct HandedHeaders {
    map: HeaderMap,
}

impl HandedHeaders {
    pub fn new(map: HeaderMap) -> Self {
        HandedHeaders { map }
    }
}

#[pymethods]
impl HandedHeaders {
    #[pyo3(signature = (key, default = None))]
    fn get(&self, py: Python<'_>, key: &str, default: Option<Py<PyAny>>) -> Option<Py<PyAny>> {
        match self.map.get(key).map(|value| value.to_str()) {
            Some(Ok(value)) => Some(PyString::new(py, value).into_any().unbind()),
            _ => default,
        }
    }

    fn get_all(&self, key: &str) -> Vec<&str> {
        self.map.get_all(key).iter().filter_map(|value| value.to_str().ok()).collect()
    }

    fn keys(&self) -> Vec<&str> {
        self.map.keys().map(|name| name.as_str()).collect()
    }

    fn values(&self) -> Vec<&str> {
        self.map.values().filter_map(|value| value.to_str().ok()).collect()
    }

    fn items(&self) -> Vec<(&str, &str)> {
        self.map.iter().filter_map(|(name, value)| value.to_str().ok().map(|v| (name.as_str(), v))).collect()
    }

    fn __contains__(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    fn __getitem__(&self, key: &str) -> PyResult<&str> {
        match self.map.get(key) {
            Some(value) => Ok(value.to_str().unwrap_or("")),
            None => Err(PyKeyError::new_err(key.to_owned())),
        }
    }

    fn __len__(&self) -> usize {
        self.map.keys_len()
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyIterator>> {
        PyIterator::from_object(PyList::new(py, self.keys())?.as_any())
    }
}
