//! The entry point through which apsw's SQLite hands over its API table.

use libsqlite3_sys as ffi;
use std::ffi::{c_char, c_int};
use std::sync::atomic::{AtomicBool, Ordering};

static READY: AtomicBool = AtomicBool::new(false);

/// What SQLite calls when `sqlite3_load_extension(db, <this library>, "sqlite3_pbfast_init")` loads the
/// extension: the function pointers of the loading SQLite are kept (process-wide: one table serves every
/// connection of that copy). Fails (SQLITE_ERROR) when that SQLite is older than the headers the bindings
/// were made from (3.54.1, libsqlite3-sys 0.40): the callers then keep to the Python path.
///
/// # Safety
/// Called by SQLite only, with its own valid `api` table.
#[no_mangle]
pub unsafe extern "C" fn sqlite3_pbfast_init(
    _db: *mut ffi::sqlite3,
    _error: *mut *mut c_char,
    api: *mut ffi::sqlite3_api_routines,
) -> c_int {
    // SAFETY: `api` is the loading SQLite's table, valid for the life of the process.
    match unsafe { ffi::rusqlite_extension_init2(api) } {
        Ok(()) => {
            READY.store(true, Ordering::Release);
            ffi::SQLITE_OK
        }
        Err(_) => ffi::SQLITE_ERROR,
    }
}

/// Whether apsw's SQLite has handed over its table (every other function here needs it).
pub fn ready() -> bool {
    READY.load(Ordering::Acquire)
}

/// The running SQLite's version number (3054001 for 3.54.1); None before the table is there.
pub fn version_number() -> Option<i32> {
    // SAFETY: the table is set (checked first).
    ready().then(|| unsafe { ffi::sqlite3_libversion_number() })
}
