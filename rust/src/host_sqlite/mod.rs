//! apsw's own SQLite, used from the extension (issue 14; see `docs/native-reads.md`).
//!
//! apsw links its SQLite statically and exports none of its `sqlite3_*` symbols, and a second copy of
//! SQLite in the process must never open the tenant databases (each copy keeps its own table of POSIX
//! locks per file: one copy's `close()` drops the other's locks). So the extension does not link SQLite at
//! all: it is loaded once as a SQLite *loadable extension* into a throwaway `:memory:` connection of apsw
//! (`pbfast.native_reads.attach_host_sqlite`), and SQLite hands it its API table (`sqlite3_api_routines`), the
//! function pointers of apsw's own copy. Every call below goes through that table (`libsqlite3-sys`'s
//! `loadable_extension` bindings), so the extension's statements run in the same SQLite, on the same
//! connections (`apsw.Connection.sqlite3pointer()`), under the same locks as apsw's.
//!
//! - [`api`]: the entry point SQLite calls, and whether the table is there.
//! - [`db_lock`]: the connection's own mutex, taken with `try` (apsw's rule; never blocks: see there).
//! - [`row_json`]: JSON strings and numbers as Python writes them.
//! - [`own_connection`]: the extension's own connection, opened through the same table (no GIL needed).
//! - [`record_plan`]: a record's JSON from one row, byte for byte as Python writes it, or not at all.
//! - [`record_reader`]: a tenant connection's kept statements and the record reads run with them.
//! - [`query_json`]: any SQL's rows as JSON (tests), and the attached SQLite's version.

pub mod api;
pub mod db_lock;
pub mod own_connection;
pub mod query_json;
pub mod record_plan;
pub mod record_reader;
pub mod row_json;
