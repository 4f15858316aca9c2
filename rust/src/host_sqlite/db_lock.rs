//! A connection's own mutex (SQLite's serialized mode), held while the extension uses the connection.
//!
//! apsw holds the same mutex for the whole of each of its calls on a connection, *including* its Python
//! callbacks (the tenant connections' authorizer runs inside `prepare`), and it takes it with
//! `sqlite3_mutex_try`: a second thread is refused (`apsw.ThreadingViolation`) rather than made to wait.
//! The extension does the same and never waits: it holds the GIL while it uses a connection, and a thread of
//! apsw that holds the mutex may be waiting for the GIL (in a callback), so blocking here could deadlock.
//! Refused, the caller answers "not served" and Python serves the request as before.

use libsqlite3_sys as ffi;

/// The held mutex of one connection; left on drop.
pub struct DbLock {
    mutex: *mut ffi::sqlite3_mutex,
}

impl DbLock {
    /// The mutex of `db`, if no other thread holds it; None when one does.
    ///
    /// # Safety
    /// `db` is an open connection of the SQLite whose table [`super::api`] holds.
    pub unsafe fn try_lock(db: *mut ffi::sqlite3) -> Option<DbLock> {
        // SAFETY: the caller's promise.
        let mutex = unsafe { ffi::sqlite3_db_mutex(db) };
        if mutex.is_null() {
            return Some(DbLock { mutex }); // a connection without a mutex (SQLITE_OPEN_NOMUTEX): the GIL guards it
        }
        // SAFETY: `mutex` is the connection's, alive while it is open.
        (unsafe { ffi::sqlite3_mutex_try(mutex) } == ffi::SQLITE_OK).then_some(DbLock { mutex })
    }

    /// Whether a mutex is held (false: a connection without one, which only the GIL guards).
    pub fn is_mutex(&self) -> bool {
        !self.mutex.is_null()
    }
}

impl Drop for DbLock {
    fn drop(&mut self) {
        if !self.mutex.is_null() {
            // SAFETY: entered in `try_lock` by this thread.
            unsafe { ffi::sqlite3_mutex_leave(self.mutex) }
        }
    }
}
