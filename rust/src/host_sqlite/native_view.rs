//! The prototype of a view by id served in the extension: route, token, one prepared statement on the
//! tenant's own apsw connection, the row as the record's JSON. And `query_json`, the smallest proof: any SQL
//! on an apsw connection, its rows as JSON.
//!
//! Thread-safety: both hold the GIL for the whole call (a view is a few µs) and take the connection's mutex
//! with `try` ([`super::db_lock`]): while an apsw call on another thread holds it, they answer None / raise,
//! and never wait; nor does a view read inside a transaction Python left open. The statement of a [`NativeView`] belongs to one connection: [`NativeView::close`] must
//! run before that connection closes (apsw's `close` fails while a statement it does not know is open).

use super::api;
use super::db_lock::DbLock;
use super::row_json::{write_str, RowPlan, Shown};
use crate::jwt;
use libsqlite3_sys as ffi;
use parking_lot::Mutex;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::ffi::{c_int, CStr};
use std::ptr;

fn not_ready() -> PyErr {
    PyRuntimeError::new_err("apsw's SQLite has not handed its API to the extension (attach_host_sqlite)")
}

fn sqlite_error(db: *mut ffi::sqlite3, code: c_int) -> PyErr {
    // SAFETY: `db` is open and its mutex held by the caller, so the message is this thread's.
    let message = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(db)) }.to_string_lossy().into_owned();
    PyRuntimeError::new_err(format!("SQLite error {code}: {message}"))
}

/// A statement prepared on `db`; None for SQL that is only whitespace or comments.
///
/// # Safety
/// `db` is open, of the host SQLite, its mutex held by the caller.
unsafe fn prepare(db: *mut ffi::sqlite3, sql: &str) -> PyResult<*mut ffi::sqlite3_stmt> {
    let mut stmt = ptr::null_mut();
    let len = c_int::try_from(sql.len()).map_err(|_| PyValueError::new_err("SQL too long"))?;
    // SAFETY: the caller's promise; the text and its length are valid for the call.
    let code = unsafe { ffi::sqlite3_prepare_v2(db, sql.as_ptr().cast(), len, &mut stmt, ptr::null_mut()) };
    if code != ffi::SQLITE_OK {
        return Err(sqlite_error(db, code));
    }
    Ok(stmt)
}

/// The rows of `sql` run on the apsw connection at `pointer` (`Connection.sqlite3pointer()`) as a JSON
/// array of objects keyed by column name (integers, floats, text as such; NULL and blobs as null). Raises
/// when another thread is using the connection.
#[pyfunction]
pub fn query_json<'py>(py: Python<'py>, pointer: usize, sql: &str) -> PyResult<Bound<'py, PyBytes>> {
    if !api::ready() {
        return Err(not_ready());
    }
    let db = pointer as *mut ffi::sqlite3;
    // SAFETY: the caller passes an open connection of apsw's SQLite (the table's).
    let Some(_lock) = (unsafe { DbLock::try_lock(db) }) else {
        return Err(PyRuntimeError::new_err("the connection is in use on another thread"));
    };
    // SAFETY: `db` is open and its mutex held.
    let stmt = unsafe { prepare(db, sql)? };
    let mut out = b"[".to_vec();
    let mut rows = 0usize;
    let result = loop {
        // SAFETY: `stmt` is ours, prepared on `db` whose mutex we hold.
        let code = unsafe { ffi::sqlite3_step(stmt) };
        match code {
            ffi::SQLITE_ROW => {
                if rows > 0 {
                    out.push(b',');
                }
                rows += 1;
                // SAFETY: positioned on a row.
                unsafe { write_plain_row(stmt, &mut out) };
            }
            ffi::SQLITE_DONE => break Ok(()),
            _ => break Err(sqlite_error(db, code)),
        }
    };
    // SAFETY: ours, finalized once.
    unsafe { ffi::sqlite3_finalize(stmt) };
    result?;
    out.push(b']');
    Ok(PyBytes::new(py, &out))
}

/// # Safety
/// `stmt` positioned on a row; its connection's mutex held.
unsafe fn write_plain_row(stmt: *mut ffi::sqlite3_stmt, out: &mut Vec<u8>) {
    out.push(b'{');
    // SAFETY (every call here): the caller's promise; indexes within the column count.
    let count = unsafe { ffi::sqlite3_column_count(stmt) };
    for index in 0..count {
        if index > 0 {
            out.push(b',');
        }
        let name = unsafe { CStr::from_ptr(ffi::sqlite3_column_name(stmt, index)) };
        write_str(out, name.to_bytes());
        out.push(b':');
        match unsafe { ffi::sqlite3_column_type(stmt, index) } {
            ffi::SQLITE_INTEGER => {
                use std::io::Write;
                let _ = write!(out, "{}", unsafe { ffi::sqlite3_column_int64(stmt, index) });
            }
            ffi::SQLITE_FLOAT => super::row_json::write_number(out, unsafe { ffi::sqlite3_column_double(stmt, index) }),
            ffi::SQLITE_TEXT => {
                let text = unsafe { ffi::sqlite3_column_text(stmt, index) };
                let len = unsafe { ffi::sqlite3_column_bytes(stmt, index) }.max(0) as usize;
                write_str(out, unsafe { std::slice::from_raw_parts(text, len) });
            }
            _ => out.extend_from_slice(b"null"),
        }
    }
    out.push(b'}');
}

struct Prepared {
    db: *mut ffi::sqlite3,
    stmt: *mut ffi::sqlite3_stmt,
}

// SAFETY: the pointers are used only under the GIL and the connection's mutex (see the module's docs).
unsafe impl Send for Prepared {}

/// A view by id of one collection, served natively: `serve(path, authorization)` matches
/// `<prefix><id>`, checks an HS256 token's signature and expiry when one is given, runs the prepared
/// statement with the id and returns the record's JSON; None for anything it does not serve (another path,
/// a bad or expired token, no such row, the connection busy), which Python then serves as before.
#[pyclass(frozen, module = "pbfast._native")]
pub struct NativeView {
    prefix: String,
    plan: RowPlan,
    token_key: Option<Vec<u8>>,
    prepared: Mutex<Option<Prepared>>,
}

#[pymethods]
impl NativeView {
    /// ``pointer``: the tenant's ``apsw.Connection.sqlite3pointer()``; ``sql``: the view's SELECT with the
    /// id as its one parameter, its result columns in the order of ``columns`` (name, shown as "text",
    /// "number", "bool" or "json"); ``constants``: the members written first.
    #[new]
    #[pyo3(signature = (pointer, prefix, sql, columns, constants, token_key=None))]
    fn new(
        pointer: usize,
        prefix: String,
        sql: &str,
        columns: Vec<(String, String)>,
        constants: Vec<(String, String)>,
        token_key: Option<Vec<u8>>,
    ) -> PyResult<NativeView> {
        if !api::ready() {
            return Err(not_ready());
        }
        let columns = columns
            .into_iter()
            .map(|(name, shown)| match Shown::parse(&shown) {
                Some(shown) => Ok((name, shown)),
                None => Err(PyValueError::new_err(format!("unknown column kind {shown:?}"))),
            })
            .collect::<PyResult<Vec<_>>>()?;
        let db = pointer as *mut ffi::sqlite3;
        // SAFETY: the caller passes an open connection of apsw's SQLite.
        let Some(_lock) = (unsafe { DbLock::try_lock(db) }) else {
            return Err(PyRuntimeError::new_err("the connection is in use on another thread"));
        };
        // SAFETY: `db` open, its mutex held.
        let stmt = unsafe { prepare(db, sql)? };
        // SAFETY: ours.
        let count = unsafe { ffi::sqlite3_column_count(stmt) };
        if stmt.is_null() || count as usize != columns.len() {
            // SAFETY: ours (finalize of null is a no-op).
            unsafe { ffi::sqlite3_finalize(stmt) };
            return Err(PyValueError::new_err("the SQL's result columns do not match the plan's"));
        }
        Ok(NativeView {
            prefix,
            plan: RowPlan::new(&constants, &columns),
            token_key,
            prepared: Mutex::new(Some(Prepared { db, stmt })),
        })
    }

    /// The record's JSON, or None when not served here (see the class).
    #[pyo3(signature = (path, authorization=None))]
    fn serve<'py>(&self, py: Python<'py>, path: &str, authorization: Option<&str>) -> Option<Bound<'py, PyBytes>> {
        let id = path.strip_prefix(self.prefix.as_str())?;
        if id.is_empty() || id.len() > 255 || id.contains('/') {
            return None;
        }
        if let Some(token) = authorization {
            if !self.token_ok(token) {
                return None;
            }
        }
        let mut out = Vec::with_capacity(256);
        self.row_json(id, &mut out)?;
        Some(PyBytes::new(py, &out))
    }

    /// Finalize the statement (before the connection closes); later calls serve nothing.
    fn close(&self) -> PyResult<()> {
        let mut prepared = self.prepared.lock();
        if let Some(Prepared { db, stmt }) = prepared.take() {
            // SAFETY: the connection is still open (the caller's promise).
            let Some(_lock) = (unsafe { DbLock::try_lock(db) }) else {
                *prepared = Some(Prepared { db, stmt });
                return Err(PyRuntimeError::new_err("the connection is in use on another thread"));
            };
            // SAFETY: ours, finalized once.
            unsafe { ffi::sqlite3_finalize(stmt) };
        }
        Ok(())
    }
}

impl NativeView {
    fn token_ok(&self, token: &str) -> bool {
        let Some(key) = &self.token_key else { return false };
        if !jwt::verify(token, key) {
            return false;
        }
        let Some((_, payload)) = jwt::segments(token) else { return false };
        expiry(&payload).is_some_and(|exp| exp > now_seconds())
    }

    fn row_json(&self, id: &str, out: &mut Vec<u8>) -> Option<()> {
        let prepared = self.prepared.lock();
        let Prepared { db, stmt } = *prepared.as_ref()?;
        // SAFETY: `db` stays open while the view is not closed (the caller's promise).
        let _lock = unsafe { DbLock::try_lock(db) }?;
        // A transaction Python left open on this connection (between two of its calls on a database thread):
        // reading inside it would see its uncommitted writes. Not served; Python serves in its turn.
        // SAFETY: `db` open, its mutex held.
        if unsafe { ffi::sqlite3_get_autocommit(db) } == 0 {
            return None;
        }
        // SAFETY (the calls below): `stmt` is ours, on `db` whose mutex we hold; the id's text is copied
        // by SQLite (SQLITE_TRANSIENT).
        unsafe {
            ffi::sqlite3_bind_text(stmt, 1, id.as_ptr().cast(), id.len() as c_int, ffi::SQLITE_TRANSIENT());
            let served = if ffi::sqlite3_step(stmt) == ffi::SQLITE_ROW {
                self.plan.write_row(stmt, out);
                Some(())
            } else {
                None
            };
            ffi::sqlite3_reset(stmt);
            served
        }
    }
}

/// The `exp` claim of a token's payload (a whole number of seconds), found without a JSON parser.
fn expiry(payload: &[u8]) -> Option<i64> {
    let at = payload.windows(6).position(|window| window == b"\"exp\":")? + 6;
    let digits: &[u8] = &payload[at..];
    let end = digits.iter().position(|byte| !byte.is_ascii_digit()).unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

impl Drop for NativeView {
    fn drop(&mut self) {
        // A view dropped without `close` leaves its statement to the connection's close (which then fails
        // in apsw): finalizing here could touch a connection already closed.
    }
}

/// Whether apsw's SQLite has handed over its API table, and its version number (None before).
#[pyfunction]
pub fn host_sqlite_version() -> Option<i32> {
    api::version_number()
}
