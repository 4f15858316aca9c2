//! `query_json`: any SQL on an apsw connection, its rows as JSON (the bridge's smallest proof, and a tool for
//! tests); and whether apsw's SQLite has handed over its API.
//!
//! Thread-safety: holds the GIL for the whole call and takes the connection's mutex with `try`
//! ([`super::db_lock`]): while an apsw call on another thread holds it, it raises, and never waits.

use super::api;
use super::db_lock::DbLock;
use super::row_json::write_str;
use libsqlite3_sys as ffi;
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

/// Whether apsw's SQLite has handed over its API table, and its version number (None before).
#[pyfunction]
pub fn host_sqlite_version() -> Option<i32> {
    api::version_number()
}
