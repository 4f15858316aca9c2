//! Reading one record on a tenant's own apsw connection: the SQL and parameters Python compiled (the view's
//! rule included), a statement prepared once per SQL text and kept, the row written by a [`RecordPlan`].
//!
//! Thread-safety: every call holds the GIL (but [`RecordReader::rows_json`] asked to let it go while it steps
//! and writes, as apsw does while it steps) and takes the connection's mutex with `try`
//! ([`super::db_lock`]): while another thread is inside an apsw call on the connection, the answer is "not
//! served" and Python serves (it never waits). Nor does it read inside a transaction Python left open. The
//! kept statements belong to the connection: [`RecordReader::close`] finalizes them and must run before the
//! connection closes (`Tenant.close` does); a closed reader serves nothing.

use super::api;
use super::db_lock::DbLock;
use super::record_plan::RecordPlan;
use libsqlite3_sys as ffi;
use parking_lot::Mutex;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyFloat, PyInt, PyString};
use std::collections::HashMap;
use std::ffi::c_int;
use std::ptr;

/// Statements kept per connection; when full they are all finalized (a tenant's views use a handful).
const KEPT_STATEMENTS: usize = 64;

struct Statements {
    db: *mut ffi::sqlite3,
    by_sql: HashMap<String, *mut ffi::sqlite3_stmt>,
}

// SAFETY: the pointers are used only with the GIL and the connection's mutex held (see the module's docs).
unsafe impl Send for Statements {}

impl Statements {
    /// Finalize every kept statement. The caller holds the connection's mutex.
    fn finalize_all(&mut self) {
        for (_, stmt) in self.by_sql.drain() {
            // SAFETY: ours, finalized once.
            unsafe { ffi::sqlite3_finalize(stmt) };
        }
    }

    /// The kept statement of `sql`, prepared now if new; None when SQLite refuses it.
    ///
    /// # Safety
    /// The connection is open and its mutex held by the caller.
    unsafe fn statement(&mut self, sql: &str) -> Option<*mut ffi::sqlite3_stmt> {
        if let Some(&stmt) = self.by_sql.get(sql) {
            return Some(stmt);
        }
        let len = c_int::try_from(sql.len()).ok()?;
        let mut stmt = ptr::null_mut();
        // SAFETY: the caller's promise; the text and its length are valid for the call.
        let code = unsafe { ffi::sqlite3_prepare_v2(self.db, sql.as_ptr().cast(), len, &mut stmt, ptr::null_mut()) };
        if code != ffi::SQLITE_OK || stmt.is_null() {
            // SAFETY: finalizing null is a no-op; a failed prepare leaves null.
            unsafe { ffi::sqlite3_finalize(stmt) };
            return None;
        }
        if self.by_sql.len() >= KEPT_STATEMENTS {
            self.finalize_all();
        }
        self.by_sql.insert(sql.to_owned(), stmt);
        Some(stmt)
    }
}

/// The prepared statements of one apsw connection and the reads run with them (see the module).
#[pyclass(frozen, module = "pbfast._native")]
pub struct RecordReader {
    statements: Mutex<Option<Statements>>,
}

enum Param {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
}

fn param(value: &Bound<'_, PyAny>) -> Option<Param> {
    if value.is_none() {
        Some(Param::Null)
    } else if value.is_instance_of::<PyString>() {
        value.extract::<String>().ok().map(Param::Text)
    } else if value.is_instance_of::<PyInt>() {
        value.extract::<i64>().ok().map(Param::Int) // bool too: apsw binds it as 0 / 1
    } else if value.is_instance_of::<PyFloat>() {
        value.extract::<f64>().ok().map(Param::Float)
    } else {
        None // bytes and anything else: Python binds them
    }
}

#[pymethods]
impl RecordReader {
    /// A reader of the apsw connection at ``pointer`` (``Connection.sqlite3pointer()``).
    #[new]
    fn new(pointer: usize) -> PyResult<RecordReader> {
        if !api::ready() {
            return Err(PyRuntimeError::new_err(
                "apsw's SQLite has not handed its API to the extension (attach_host_sqlite)",
            ));
        }
        let db = pointer as *mut ffi::sqlite3;
        Ok(RecordReader { statements: Mutex::new(Some(Statements { db, by_sql: HashMap::new() })) })
    }

    /// The first row of ``sql`` run with ``params`` as a record's JSON by ``plan``; ``b""`` when there is no
    /// row; None when not served here (the connection busy on another thread, a transaction open on it, SQL
    /// SQLite refuses or an error while reading, a parameter or value the plan does not write, the reader
    /// closed): Python then runs the same read itself.
    fn row_json<'py>(
        &self,
        py: Python<'py>,
        sql: &str,
        params: Vec<Bound<'py, PyAny>>,
        plan: &RecordPlan,
    ) -> Option<Bound<'py, PyBytes>> {
        let params = params.iter().map(param).collect::<Option<Vec<_>>>()?;
        let mut guard = self.statements.try_lock()?;
        let statements = guard.as_mut()?;
        // SAFETY: the connection is open while the reader is not closed (`Tenant.close` closes it first).
        let _lock = unsafe { DbLock::try_lock(statements.db) }?;
        // SAFETY: open, mutex held.
        if unsafe { ffi::sqlite3_get_autocommit(statements.db) } == 0 {
            return None; // inside a transaction Python left open: its uncommitted writes are Python's to read
        }
        let mut out = Vec::with_capacity(512);
        // SAFETY: open, mutex held.
        let served = unsafe { read_row(statements, sql, &params, plan, &mut out) };
        // An apsw callback that ran inside (the authorizer in prepare, the time limit's progress handler) may
        // have left a Python exception behind: Python reruns the read and meets it itself.
        if PyErr::take(py).is_some() {
            return None;
        }
        served.then(|| PyBytes::new(py, &out))
    }

    /// Every row of ``sql`` run with ``params`` as a JSON array of records by ``plan`` (a list page's items);
    /// None when not served here (as :meth:`row_json`, or any row the plan does not write).
    ///
    /// ``release_gil``: step and write with the GIL let go (a database thread's read, so the event loop runs
    /// meanwhile), as apsw steps its own statements: the connection's mutex stays held throughout, so any
    /// other use of the connection meanwhile waits or is refused by apsw, never interleaved, and
    /// apsw's callbacks (the time limit's progress handler, the authorizer) take the GIL themselves. Ignored on
    /// a connection without a mutex, which only the GIL guards.
    #[pyo3(signature = (sql, params, plan, release_gil = false))]
    fn rows_json<'py>(
        &self,
        py: Python<'py>,
        sql: &str,
        params: Vec<Bound<'py, PyAny>>,
        plan: &RecordPlan,
        release_gil: bool,
    ) -> Option<Bound<'py, PyBytes>> {
        let params = params.iter().map(param).collect::<Option<Vec<_>>>()?;
        let mut guard = self.statements.try_lock()?;
        let statements = guard.as_mut()?;
        // SAFETY: as in `row_json`.
        let lock = unsafe { DbLock::try_lock(statements.db) }?;
        // SAFETY: open, mutex held.
        if unsafe { ffi::sqlite3_get_autocommit(statements.db) } == 0 {
            return None;
        }
        let mut out = Vec::with_capacity(8192);
        // SAFETY: open, mutex held (also while the GIL is let go: `lock` lives past the call, and the reader's
        // own mutex, held by `guard`, keeps `close` from finalizing the statements meanwhile).
        let served = if release_gil && lock.is_mutex() {
            // SAFETY: as above; `read_rows` touches no Python object.
            py.detach(|| unsafe { read_rows(statements, sql, &params, plan, &mut out) })
        } else {
            // SAFETY: open, mutex held.
            unsafe { read_rows(statements, sql, &params, plan, &mut out) }
        };
        if PyErr::take(py).is_some() {
            return None;
        }
        served.then(|| PyBytes::new(py, &out))
    }

    /// How many statements are kept (for tests).
    #[getter]
    fn kept_statements(&self) -> usize {
        self.statements.lock().as_ref().map_or(0, |statements| statements.by_sql.len())
    }

    /// Finalize the kept statements (before the connection closes); later reads serve nothing. Raises when
    /// the connection is in use on another thread (its owner closes it in its turn).
    fn close(&self) -> PyResult<()> {
        // Never waits: a read on another thread holds this while it lets the GIL go, and needs the GIL back.
        let Some(mut guard) = self.statements.try_lock() else {
            return Err(PyRuntimeError::new_err("the reader is in use on another thread"));
        };
        if let Some(statements) = guard.as_mut().filter(|statements| !statements.by_sql.is_empty()) {
            // SAFETY: still open: apsw cannot close a connection while statements of ours are on it.
            let Some(_lock) = (unsafe { DbLock::try_lock(statements.db) }) else {
                return Err(PyRuntimeError::new_err("the connection is in use on another thread"));
            };
            statements.finalize_all();
        }
        *guard = None;
        Ok(())
    }
}

/// The kept statement of `sql` with `params` bound, if it reads `plan.columns` columns and takes as many
/// parameters as given; None otherwise (bindings cleared).
///
/// # Safety
/// The connection of `statements` is open and its mutex held.
unsafe fn bound(
    statements: &mut Statements,
    sql: &str,
    params: &[Param],
    plan: &RecordPlan,
) -> Option<*mut ffi::sqlite3_stmt> {
    // SAFETY: the caller's promise.
    let stmt = unsafe { statements.statement(sql) }?;
    // SAFETY (the calls below): `stmt` is ours, on the connection whose mutex is held; texts are copied
    // (SQLITE_TRANSIENT).
    unsafe {
        if ffi::sqlite3_column_count(stmt) as usize != plan.columns
            || ffi::sqlite3_bind_parameter_count(stmt) as usize != params.len()
        {
            return None;
        }
        for (at, value) in params.iter().enumerate() {
            let index = at as c_int + 1;
            let code = match value {
                Param::Null => ffi::sqlite3_bind_null(stmt, index),
                Param::Int(number) => ffi::sqlite3_bind_int64(stmt, index, *number),
                Param::Float(number) => ffi::sqlite3_bind_double(stmt, index, *number),
                Param::Text(text) => match c_int::try_from(text.len()) {
                    Ok(len) => ffi::sqlite3_bind_text(stmt, index, text.as_ptr().cast(), len, ffi::SQLITE_TRANSIENT()),
                    Err(_) => ffi::SQLITE_TOOBIG,
                },
            };
            if code != ffi::SQLITE_OK {
                ffi::sqlite3_clear_bindings(stmt);
                return None;
            }
        }
    }
    Some(stmt)
}

/// Bind, step once, write. True when `out` holds the answer (a record or nothing for no row).
///
/// # Safety
/// The connection of `statements` is open and its mutex held.
unsafe fn read_row(statements: &mut Statements, sql: &str, params: &[Param], plan: &RecordPlan, out: &mut Vec<u8>) -> bool {
    // SAFETY: the caller's promise.
    let Some(stmt) = (unsafe { bound(statements, sql, params, plan) }) else { return false };
    // SAFETY (the calls below): `stmt` is ours and bound, on the connection whose mutex is held; reset before
    // returning.
    unsafe {
        let served = match ffi::sqlite3_step(stmt) {
            ffi::SQLITE_ROW => plan.write_row(stmt, out),
            ffi::SQLITE_DONE => true, // no such row: b""
            _ => false,
        };
        ffi::sqlite3_reset(stmt);
        ffi::sqlite3_clear_bindings(stmt);
        served
    }
}

/// Bind, step to the end, write `[record,...]`. True when `out` holds the whole array.
///
/// # Safety
/// The connection of `statements` is open and its mutex held.
unsafe fn read_rows(statements: &mut Statements, sql: &str, params: &[Param], plan: &RecordPlan, out: &mut Vec<u8>) -> bool {
    // SAFETY: the caller's promise.
    let Some(stmt) = (unsafe { bound(statements, sql, params, plan) }) else { return false };
    out.push(b'[');
    // SAFETY (the calls below): `stmt` is ours and bound, on the connection whose mutex is held; reset before
    // returning.
    unsafe {
        let served = loop {
            match ffi::sqlite3_step(stmt) {
                ffi::SQLITE_ROW => {
                    if out.len() > 1 {
                        out.push(b',');
                    }
                    if !plan.write_row(stmt, out) {
                        break false;
                    }
                }
                ffi::SQLITE_DONE => break true,
                _ => break false,
            }
        };
        ffi::sqlite3_reset(stmt);
        ffi::sqlite3_clear_bindings(stmt);
        out.push(b']');
        served
    }
}
