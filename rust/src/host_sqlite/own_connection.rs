//! The extension's own connection to a tenant database, opened through apsw's SQLite (the handed API
//! table): no apsw object, no Python callback, so it can be used without the GIL, from the extension's own
//! threads. Being the same SQLite copy as apsw's, its `close()` keeps the locks apsw's connections hold on
//! the same file (SQLite defers closing a file another connection has locks on), which a second copy of
//! SQLite would drop.

use super::api;
use super::db_lock::DbLock;
use libsqlite3_sys as ffi;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::ffi::{c_int, CString};
use std::ptr;

/// An open read-only connection of the host SQLite; closed on drop.
pub struct OwnConnection {
    db: *mut ffi::sqlite3,
}

// SAFETY: the connection is opened in serialized mode (SQLITE_OPEN_FULLMUTEX): any thread may use it.
unsafe impl Send for OwnConnection {}

impl OwnConnection {
    pub fn open_read_only(path: &str) -> Result<OwnConnection, String> {
        if !api::ready() {
            return Err("apsw's SQLite has not handed its API to the extension".into());
        }
        let path = CString::new(path).map_err(|_| "a NUL in the path".to_string())?;
        let mut db = ptr::null_mut();
        let flags = ffi::SQLITE_OPEN_READONLY | ffi::SQLITE_OPEN_FULLMUTEX;
        // SAFETY: the table is there; the path is NUL-terminated.
        let code = unsafe { ffi::sqlite3_open_v2(path.as_ptr(), &mut db, flags, ptr::null()) };
        let connection = OwnConnection { db };
        if code != ffi::SQLITE_OK {
            return Err(format!("open failed: {code}"));
        }
        Ok(connection)
    }

    /// The first column of each row of `sql` (whole numbers as text), for probes and tests.
    pub fn first_column(&self, sql: &str) -> Result<Vec<String>, String> {
        // SAFETY: our open connection (its own mutex, serialized mode).
        let _lock = unsafe { DbLock::try_lock(self.db) }.ok_or("busy")?;
        let mut stmt = ptr::null_mut();
        // SAFETY: open connection, mutex held.
        let code =
            unsafe { ffi::sqlite3_prepare_v2(self.db, sql.as_ptr().cast(), sql.len() as c_int, &mut stmt, ptr::null_mut()) };
        if code != ffi::SQLITE_OK {
            return Err(format!("prepare failed: {code}"));
        }
        let mut out = Vec::new();
        // SAFETY: `stmt` is ours.
        while unsafe { ffi::sqlite3_step(stmt) } == ffi::SQLITE_ROW {
            let mut text = Vec::new();
            // SAFETY: on a row.
            unsafe {
                let value = ffi::sqlite3_column_text(stmt, 0);
                let len = ffi::sqlite3_column_bytes(stmt, 0).max(0) as usize;
                if !value.is_null() {
                    text.extend_from_slice(std::slice::from_raw_parts(value, len));
                }
            }
            out.push(String::from_utf8_lossy(&text).into_owned());
        }
        // SAFETY: ours, once.
        unsafe { ffi::sqlite3_finalize(stmt) };
        Ok(out)
    }
}

impl Drop for OwnConnection {
    fn drop(&mut self) {
        // SAFETY: ours, no statement left open (each is finalized where it is made). (The API table has no close_v2.)
        unsafe { ffi::sqlite3_close(self.db) };
    }
}

/// Open `path` read-only through apsw's SQLite, run `sql`, close: the first column of each row. (The lock
/// test: apsw's locks on the same file survive this close.)
#[pyfunction]
pub fn own_connection_probe(path: &str, sql: &str) -> PyResult<Vec<String>> {
    let connection = OwnConnection::open_read_only(path).map_err(PyRuntimeError::new_err)?;
    connection.first_column(sql).map_err(PyRuntimeError::new_err)
}
