"""apsw's SQLite handed to the extension (issue 14; see ``docs/native-reads.md``).

apsw embeds its own SQLite and exports none of its symbols; a second SQLite in the process must not open the
tenant databases (each copy keeps its own POSIX locks per file). So the extension links no SQLite: it is loaded
once, as a SQLite loadable extension, into a throwaway ``:memory:`` connection, and SQLite hands it the table of
its own functions (``sqlite3_api_routines``). From then on the extension's statements run in apsw's SQLite, on
apsw's connections (``Connection.sqlite3pointer()``). Tenant connections keep loading extensions off
(``sqlite_guard.harden``): only the throwaway connection ever has it on.

Every process that serves tenants calls :func:`attach_at_start` once (the node, its worker processes, the
all-in-one); record views are then read natively (:mod:`pbfast.pocketbase.records.native_view`). When it cannot
attach, one log line says so and Python serves everything, as before.

Thread-safety: :func:`attach_host_sqlite` may run on any thread, more than once (the table is the same).
"""

from __future__ import annotations

import apsw

from pbfast import _native
from pbfast.logs import component_logger

__all__ = ["ENTRY_POINT", "attach_at_start", "attach_host_sqlite", "host_sqlite_ready"]

log = component_logger("Node")

ENTRY_POINT = "sqlite3_pbfast_init"


def attach_host_sqlite() -> int | None:
    """Hand apsw's SQLite API to the extension; its version number (3054001 for 3.54.1), or None when this
    apsw cannot load extensions or its SQLite is older than the extension's bindings (the Python path then
    serves everything, as before)."""
    version = _native.host_sqlite_version()
    if version is not None:
        return version
    connection = apsw.Connection(":memory:")
    try:
        connection.enable_load_extension(True)
        connection.load_extension(_native.__file__, ENTRY_POINT)
    except (apsw.Error, AttributeError):
        return None
    finally:
        connection.close()
    return _native.host_sqlite_version()


def host_sqlite_ready() -> bool:
    """Whether the extension has apsw's SQLite (reads may then run natively)."""
    return _native.host_sqlite_version() is not None


def attach_at_start() -> bool:
    """:func:`attach_host_sqlite` at a serving process's start; one log line when native reads are off."""
    if attach_host_sqlite() is not None:
        return True
    log.warning("native reads off: this apsw (SQLite %s) cannot hand its SQLite to the extension "
                "(no load_extension, or older than 3.54.1); Python serves every read", apsw.sqlite_lib_version())
    return False
