"""A tenant's collections on PocketBase 0.40.6's own ``data.db`` layout (PocketBase's ``core/collection_*``).

* :mod:`.model` - :class:`Collection` (one row of ``_collections``; ``to_api()`` is what PocketBase's
  collections API shows a superuser) and :class:`CollectionMap` (a tenant's collections by name and id);
* :mod:`.auth_options`, :mod:`.defaults` - auth options, and the system fields and indexes every collection
  gets;
* :mod:`.decode`, :mod:`.validate`, :mod:`.rules` - a collections API body bound onto a collection, then
  validated with PocketBase's error codes (API rules through the filter engine);
* :mod:`.table_sync`, :mod:`.views` - the table (or SQL view) kept in step with the definition, data kept;
* :mod:`.service` - create, update, delete, truncate, scaffolds; :mod:`.importer` - a whole configuration
  imported in one transaction; :mod:`.cascade` - deleting records with
  their relations (PocketBase's cascade/unlink);
* :mod:`.system`, :mod:`.database` - the system collections, and a fresh ``data.db`` as stock PocketBase
  creates it.

Functions take an ``apsw.Connection`` and must be called from the thread that owns it.
"""

from pbfast.pocketbase.collections.cascade import (
    LastSuperuserError,
    RecordChanges,
    RequiredReferenceError,
    delete_records,
)
from pbfast.pocketbase.collections.database import init_tenant_database
from pbfast.pocketbase.collections.errors import CollectionValidationError
from pbfast.pocketbase.collections.importer import import_collections
from pbfast.pocketbase.collections.model import Collection, CollectionMap, load_collection, load_collections
from pbfast.pocketbase.collections.service import (
    create_collection,
    delete_collection,
    list_collection_ids,
    scaffolds,
    truncate_collection,
    update_collection,
)
from pbfast.pocketbase.collections.validate import RuleChecker

__all__ = [
    "Collection",
    "CollectionMap",
    "CollectionValidationError",
    "LastSuperuserError",
    "RequiredReferenceError",
    "RuleChecker",
    "create_collection",
    "delete_collection",
    "delete_records",
    "import_collections",
    "RecordChanges",
    "init_tenant_database",
    "list_collection_ids",
    "load_collection",
    "load_collections",
    "scaffolds",
    "truncate_collection",
    "update_collection",
]
