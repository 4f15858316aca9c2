"""One collection as PocketBase 0.40 stores it in ``_collections`` (:class:`Collection`), and a tenant's
collections by name and id (:class:`CollectionMap`, :func:`load_collections`)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import apsw
import orjson

from pbfast.pocketbase.fields import Field, load_field
from pbfast.pocketbase.collections.auth_options import AuthOptions
from pbfast.pocketbase.gocompat import go_json_default
from pbfast.timefmt import format_datetime

__all__ = ["COLLECTION_TYPES", "RULE_KEYS", "Collection", "CollectionMap", "load_collection", "load_collections",
           "now_text"]

COLLECTION_TYPES: Final = ("base", "auth", "view")
RULE_KEYS: Final = ("listRule", "viewRule", "createRule", "updateRule", "deleteRule")


@dataclass
class Collection:
    """One collection (a row of ``_collections``): typed fields, API rules, indexes, and the options of its
    type (``auth``: an auth collection's options, secrets included; ``view_query``: a view's query)."""

    id: str
    name: str
    type: str = "base"
    system: bool = False
    fields: list[Field] = field(default_factory=list)
    listRule: str | None = None  # noqa: N815 - PocketBase's names
    viewRule: str | None = None  # noqa: N815
    createRule: str | None = None  # noqa: N815
    updateRule: str | None = None  # noqa: N815
    deleteRule: str | None = None  # noqa: N815
    auth: AuthOptions = field(default_factory=AuthOptions)
    view_query: str = ""
    indexes: list[str] = field(default_factory=list)
    created: str = ""
    updated: str = ""

    def field(self, name: str) -> Field | None:
        """The field named ``name`` (exact match, as PocketBase's ``Fields.GetByName``), or None."""
        for candidate in self.fields:
            if candidate.name == name:
                return candidate
        return None

    def field_by_id(self, field_id: str) -> Field | None:
        for candidate in self.fields:
            if candidate.id == field_id:
                return candidate
        return None

    @property
    def is_auth(self) -> bool:
        return self.type == "auth"

    @property
    def is_view(self) -> bool:
        return self.type == "view"

    def rule(self, key: str) -> str | None:
        """An API rule by its key (``listRule``... or, for auth collections, ``authRule``/``manageRule``)."""
        if key in RULE_KEYS:
            value: str | None = getattr(self, key)
            return value
        if key == "authRule":
            return self.auth.auth_rule
        if key == "manageRule":
            return self.auth.manage_rule
        return None

    def to_api(self) -> dict[str, object]:
        """Exactly what PocketBase's collections API returns for this collection (to a superuser)."""
        result: dict[str, object] = {
            "id": self.id,
            "listRule": self.listRule, "viewRule": self.viewRule, "createRule": self.createRule,
            "updateRule": self.updateRule, "deleteRule": self.deleteRule,
            "name": self.name, "type": self.type,
            "fields": [f.to_json() for f in self.fields],
            "indexes": list(self.indexes),
            "created": self.created, "updated": self.updated,
            "system": self.system,
        }
        if self.type == "auth":
            result.update(self.auth.to_api())
        elif self.type == "view":
            result["viewQuery"] = self.view_query
        return result

    def to_row(self) -> dict[str, object]:
        """The ``_collections`` row PocketBase stores (JSON columns as text)."""
        options: dict[str, object] = {}
        if self.type == "auth":
            options = self.auth.to_json()
        elif self.type == "view":
            options = {"viewQuery": self.view_query}
        return {
            "id": self.id, "system": 1 if self.system else 0, "type": self.type, "name": self.name,
            "fields": orjson.dumps([f.to_json() for f in self.fields], default=go_json_default).decode(),
            "indexes": orjson.dumps(list(self.indexes)).decode(),
            "listRule": self.listRule, "viewRule": self.viewRule, "createRule": self.createRule,
            "updateRule": self.updateRule, "deleteRule": self.deleteRule,
            "options": orjson.dumps(options).decode(),
            "created": self.created, "updated": self.updated,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Collection:
        """A collection from a ``_collections`` row (columns by name)."""
        def json_value(key: str, default: Any) -> Any:
            raw = row.get(key)
            if raw is None or raw == "":
                return default
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError as err:
                raise ValueError(f"collection {row.get('name')!r}: invalid JSON in {key}") from err
            return default if value is None else value

        collection_type = str(row.get("type") or "base")
        raw_options = json_value("options", {})
        if not isinstance(raw_options, dict):
            raw_options = {}
        return cls(
            id=str(row["id"]), name=str(row["name"]), type=collection_type, system=bool(row.get("system")),
            fields=[load_field(f) for f in json_value("fields", []) if isinstance(f, dict)],
            listRule=row.get("listRule"), viewRule=row.get("viewRule"), createRule=row.get("createRule"),
            updateRule=row.get("updateRule"), deleteRule=row.get("deleteRule"),
            auth=AuthOptions.from_json(raw_options) if collection_type == "auth" else AuthOptions(),
            view_query=str(raw_options.get("viewQuery") or "") if collection_type == "view" else "",
            indexes=[str(i) for i in json_value("indexes", [])],
            created=str(row.get("created") or ""), updated=str(row.get("updated") or ""),
        )


class CollectionMap(dict[str, Collection]):
    """A tenant's collections by name, built once (after a schema change a new map is loaded); ``[]``,
    :meth:`get` and :meth:`lookup` also accept a collection id or a name in another case (PocketBase's
    ``FindCollectionByNameOrId``). The one registry of collections: the tenant, the collection validator
    and the filter engine's resolver all use it."""

    def __init__(self, collections: Iterable[Collection] = ()) -> None:
        super().__init__((c.name, c) for c in collections)
        self._by_id = {c.id: c for c in self.values()}
        self._by_lower_name: dict[str, Collection] = {}
        for name, collection in self.items():
            self._by_lower_name.setdefault(name.lower(), collection)

    def __missing__(self, key: str) -> Collection:
        found = self.lookup(key)
        if found is None:
            raise KeyError(key)
        return found

    def get(self, key: str, default: Any = None) -> Any:
        found = self.lookup(key)
        return default if found is None else found

    def lookup(self, name_or_id: str) -> Collection | None:
        """A collection by exact name, by id, then by case-insensitive name."""
        found = dict.get(self, name_or_id)
        if found is None:
            found = self._by_id.get(name_or_id) or self._by_lower_name.get(name_or_id.lower())
        return found

    def by_id(self, collection_id: str) -> Collection | None:
        return self._by_id.get(collection_id)


_COLLECTION_COLUMNS: Final = ("id", "system", "type", "name", "fields", "indexes", "listRule", "viewRule",
                              "createRule", "updateRule", "deleteRule", "options", "created", "updated")


def load_collections(conn: apsw.Connection) -> CollectionMap:
    """Every collection of the database (PocketBase's ``_collections``), keyed by name."""
    try:
        rows = conn.execute(f"SELECT {', '.join(_COLLECTION_COLUMNS)} FROM _collections ORDER BY rowid").fetchall()
    except apsw.Error as err:
        raise RuntimeError(f"cannot read _collections: {err}") from err
    return CollectionMap(Collection.from_row(dict(zip(_COLLECTION_COLUMNS, values, strict=True))) for values in rows)


def load_collection(conn: apsw.Connection, name_or_id: str) -> Collection | None:
    """One collection by id or name (case-insensitive), read from the database."""
    row = conn.execute(
        f"SELECT {', '.join(_COLLECTION_COLUMNS)} FROM _collections WHERE id = ? OR name = ? COLLATE NOCASE "
        "ORDER BY id = ? DESC LIMIT 1", (name_or_id, name_or_id, name_or_id)).fetchone()
    if row is None:
        return None
    return Collection.from_row(dict(zip(_COLLECTION_COLUMNS, row, strict=True)))


def now_text() -> str:
    """The current time in PocketBase's datetime layout (``created``/``updated`` values)."""
    return format_datetime(time.time())
