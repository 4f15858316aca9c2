"""A tenant's collections on PocketBase 0.40.6's own ``data.db`` layout.

* :class:`Collection` - one row of ``_collections`` (``to_api()`` is exactly what PocketBase's
  ``GET /api/collections/{name}`` shows a superuser; ``to_row()`` what it stores);
* :func:`load_collections` - every collection of a database, by name (and id);
* :func:`init_tenant_database` - a fresh ``data.db`` equal in schema to one stock PocketBase creates
  (bootstrap tables, system collections, ``users``, settings, migration marks, fresh random secrets);
* :func:`create_collection`, :func:`update_collection`, :func:`delete_collection`,
  :func:`truncate_collection` - PocketBase's collection API semantics: payload decoding, default/system
  fields, validation with PocketBase's error codes (:class:`CollectionValidationError`), and the table
  migration (ALTER TABLE ADD/RENAME/DROP COLUMN, single/multiple value conversion, index rebuilds, views)
  in one transaction, keeping the rows' data.

Functions take an ``apsw.Connection`` and must be called from the thread that owns it.
"""

from __future__ import annotations

import copy
import re
import secrets
import string
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import apsw
import apsw.ext
import orjson

from pbfast.pocketbase import fields as F
from pbfast.pocketbase import system_collections as S
from pbfast.pocketbase.dbutils.identifiers import backquote
from pbfast.pocketbase.dbutils.index import ParsedIndex, parse_index, single_column_unique_index
from pbfast.pocketbase.dbutils.transaction import sqlite_error_text
from pbfast.pocketbase.gocompat import go_json_default
from pbfast.pocketbase.sqlite_guard import SqlRefused, execute_one, read_only_select
from pbfast.timefmt import format_datetime

__all__ = [
    "AUTH_OPTION_KEYS",
    "Collection",
    "CollectionMap",
    "CollectionValidationError",
    "LastSuperuserError",
    "RequiredReferenceError",
    "RuleChecker",
    "create_collection",
    "delete_collection",
    "delete_records",
    "init_tenant_database",
    "load_collection",
    "load_collections",
    "set_rule_checker",
    "scaffolds",
    "truncate_collection",
    "update_collection",
]

DECODE_ERROR_MESSAGE: Final = "Failed to load the submitted data due to invalid formatting."
COLLECTION_TYPES: Final = ("base", "auth", "view")
RULE_KEYS: Final = ("listRule", "viewRule", "createRule", "updateRule", "deleteRule")
TOKEN_KEYS: Final = ("authToken", "passwordResetToken", "emailChangeToken", "verificationToken", "fileToken")
TEMPLATE_KEYS: Final = ("verificationTemplate", "resetPasswordTemplate", "confirmEmailChangeTemplate")
AUTH_OPTION_KEYS: Final = ("authRule", "manageRule", "authAlert", "oauth2", "passwordAuth", "mfa", "otp",
                           *TOKEN_KEYS, *TEMPLATE_KEYS)
SYSTEM_AUTH_FIELDS: Final = ("password", "tokenKey", "email", "emailVisibility", "verified")
RESERVED_AUTH_FIELD_NAMES: Final = ("passwordConfirm", "oldPassword")
MAX_TOKEN_DURATION: Final = 94670856
_NAME_RE: Final = re.compile(r"\w+", re.ASCII)


class CollectionValidationError(Exception):
    """A collection payload PocketBase would reject.

    ``data`` is PocketBase's error data (``{"name": {"code": ..., "message": ...}}``, nested for fields
    and options); ``message`` the API message to show with it (``"Failed to create collection."``,
    ``"Failed to update collection."``, ``"Failed to load the submitted data due to invalid formatting."``,
    ``"Failed to delete collection"``...). Both go into a 400 response.
    """

    def __init__(self, message: str, data: dict[str, Any] | None = None) -> None:
        self.message = message
        self.data: dict[str, Any] = data or {}
        super().__init__(f"{message} {orjson.dumps(self.data).decode() if self.data else ''}".strip())


RuleChecker = Callable[["Collection", str, Mapping[str, "Collection"]], None]
"""Checks an API rule for a collection (raises ``ValueError`` with the reason when it is invalid)."""

_rule_checker: RuleChecker | None = None


def set_rule_checker(checker: RuleChecker | None) -> None:
    """Install the API-rule validator (the filter engine) used when collections are saved; rules are
    accepted unchecked while none is installed."""
    global _rule_checker  # noqa: PLW0603 - process-wide hook set once at start-up
    _rule_checker = checker


def _now() -> str:
    return format_datetime(time.time())


def _item(code: str, message: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return F.FieldError(code, message, params).to_dict()


_REQUIRED: Final = {"code": "validation_required", "message": "Cannot be blank."}


# ----------------------------------------------------------------------------------------- options


def _merge(base: Any, patch: Any) -> Any:
    """JSON-decode-into-existing-struct semantics: objects merge key by key, everything else replaces."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = _merge(base.get(key), value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(patch)


def _template(value: Any) -> dict[str, str]:
    value = value if isinstance(value, Mapping) else {}
    return {"subject": str(value.get("subject") or ""), "body": str(value.get("body") or "")}


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return int(value)
    return 0


def _provider(value: Any) -> dict[str, Any]:
    value = value if isinstance(value, Mapping) else {}
    result: dict[str, Any] = {"pkce": value.get("pkce") if isinstance(value.get("pkce"), bool) else None}
    for key in ("name", "clientId", "clientSecret", "authURL", "tokenURL", "userInfoURL", "displayName"):
        result[key] = str(value.get(key) or "")
    extra = value.get("extra")
    result["extra"] = dict(extra) if isinstance(extra, Mapping) else {}
    return result


def _obj(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """``raw[key]`` when it is an object, else an empty one."""
    value = raw.get(key)
    return value if isinstance(value, Mapping) else {}


def normalize_auth_options(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Auth collection options in PocketBase's stored shape and key order (missing parts get Go's zero
    values, secrets included)."""
    oauth2 = _obj(raw, "oauth2")
    mapped = _obj(oauth2, "mappedFields")
    alert = _obj(raw, "authAlert")
    password = _obj(raw, "passwordAuth")
    mfa = _obj(raw, "mfa")
    otp = _obj(raw, "otp")
    options: dict[str, Any] = {
        "authRule": raw.get("authRule") if isinstance(raw.get("authRule"), str) else None,
        "manageRule": raw.get("manageRule") if isinstance(raw.get("manageRule"), str) else None,
        "authAlert": {"enabled": bool(alert.get("enabled")), "emailTemplate": _template(alert.get("emailTemplate"))},
        "oauth2": {
            "providers": [_provider(p) for p in (oauth2.get("providers") or [])],
            "mappedFields": {k: str(mapped.get(k) or "") for k in ("id", "name", "username", "avatarURL")},
            "enabled": bool(oauth2.get("enabled")),
        },
        "passwordAuth": {"enabled": bool(password.get("enabled")),
                         "identityFields": [str(v) for v in (password.get("identityFields") or [])]},
        "mfa": {"enabled": bool(mfa.get("enabled")), "duration": _int(mfa.get("duration")),
                "rule": str(mfa.get("rule") or "")},
        "otp": {"enabled": bool(otp.get("enabled")), "duration": _int(otp.get("duration")),
                "length": _int(otp.get("length")), "emailTemplate": _template(otp.get("emailTemplate"))},
    }
    for key in TOKEN_KEYS:
        token = _obj(raw, key)
        options[key] = {"secret": str(token.get("secret") or ""), "duration": _int(token.get("duration"))}
    for key in TEMPLATE_KEYS:
        options[key] = _template(raw.get(key))
    return options


def _auth_options_for_api(options: Mapping[str, Any]) -> dict[str, Any]:
    """What the collections API shows of auth options: token secrets and OAuth2 client secrets omitted."""
    shown = normalize_auth_options(options)
    for key in TOKEN_KEYS:
        shown[key] = {"duration": shown[key]["duration"]}
    for provider in shown["oauth2"]["providers"]:
        provider.pop("clientSecret", None)
    return shown


# -------------------------------------------------------------------------------------- collection


@dataclass
class Collection:
    """One collection (a row of ``_collections``); ``fields`` are normalized field dicts, ``options``
    the type's options (auth options with secrets, ``{"viewQuery": ...}`` for views, ``{}`` for base)."""

    id: str
    name: str
    type: str = "base"
    system: bool = False
    fields: list[dict[str, Any]] = field(default_factory=list)
    listRule: str | None = None  # noqa: N815 - PocketBase's names
    viewRule: str | None = None  # noqa: N815
    createRule: str | None = None  # noqa: N815
    updateRule: str | None = None  # noqa: N815
    deleteRule: str | None = None  # noqa: N815
    options: dict[str, Any] = field(default_factory=dict)
    indexes: list[str] = field(default_factory=list)
    created: str = ""
    updated: str = ""

    def field(self, name: str) -> dict[str, Any] | None:
        """The field named ``name`` (exact match, as PocketBase's ``Fields.GetByName``), or None."""
        for candidate in self.fields:
            if candidate.get("name") == name:
                return candidate
        return None

    def field_by_id(self, field_id: str) -> dict[str, Any] | None:
        for candidate in self.fields:
            if candidate.get("id") == field_id:
                return candidate
        return None

    @property
    def is_auth(self) -> bool:
        return self.type == "auth"

    @property
    def is_view(self) -> bool:
        return self.type == "view"

    @property
    def view_query(self) -> str:
        return str(self.options.get("viewQuery") or "")

    def rule(self, key: str) -> str | None:
        """An API rule by its key (``listRule``... or, for auth collections, ``authRule``/``manageRule``)."""
        if key in RULE_KEYS:
            value: str | None = getattr(self, key)
            return value
        value = self.options.get(key)
        return value if isinstance(value, str) else None

    def to_api(self) -> dict[str, Any]:
        """Exactly what PocketBase's collections API returns for this collection (to a superuser)."""
        result: dict[str, Any] = {
            "id": self.id,
            "listRule": self.listRule, "viewRule": self.viewRule, "createRule": self.createRule,
            "updateRule": self.updateRule, "deleteRule": self.deleteRule,
            "name": self.name, "type": self.type,
            "fields": [F.normalize_field(f) for f in self.fields],
            "indexes": list(self.indexes),
            "created": self.created, "updated": self.updated,
            "system": self.system,
        }
        if self.type == "auth":
            result.update(_auth_options_for_api(self.options))
        elif self.type == "view":
            result["viewQuery"] = self.view_query
        return result

    def to_row(self) -> dict[str, Any]:
        """The ``_collections`` row PocketBase stores (JSON columns as text)."""
        if self.type == "auth":
            options: dict[str, Any] = normalize_auth_options(self.options)
        elif self.type == "view":
            options = {"viewQuery": self.view_query}
        else:
            options = {}
        return {
            "id": self.id, "system": 1 if self.system else 0, "type": self.type, "name": self.name,
            "fields": orjson.dumps([F.normalize_field(f) for f in self.fields], default=go_json_default).decode(),
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
        if collection_type == "auth":
            options = normalize_auth_options(raw_options)
        elif collection_type == "view":
            options = {"viewQuery": str(raw_options.get("viewQuery") or "")}
        else:
            options = {}
        return cls(
            id=str(row["id"]), name=str(row["name"]), type=collection_type, system=bool(row.get("system")),
            fields=[F.normalize_field(f) for f in json_value("fields", []) if isinstance(f, dict)],
            listRule=row.get("listRule"), viewRule=row.get("viewRule"), createRule=row.get("createRule"),
            updateRule=row.get("updateRule"), deleteRule=row.get("deleteRule"),
            options=options, indexes=[str(i) for i in json_value("indexes", [])],
            created=str(row.get("created") or ""), updated=str(row.get("updated") or ""),
        )


class CollectionMap(dict[str, Collection]):
    """Collections by name; :meth:`get` and ``[]`` also accept a collection id or a name in another case
    (PocketBase's ``FindCollectionByNameOrId``)."""

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
        if dict.__contains__(self, name_or_id):
            return dict.__getitem__(self, name_or_id)
        for collection in self.values():
            if collection.id == name_or_id:
                return collection
        lowered = name_or_id.lower()
        for name, collection in self.items():
            if name.lower() == lowered:
                return collection
        return None

    def by_id(self, collection_id: str) -> Collection | None:
        return next((c for c in self.values() if c.id == collection_id), None)


_COLLECTION_COLUMNS: Final = ("id", "system", "type", "name", "fields", "indexes", "listRule", "viewRule",
                              "createRule", "updateRule", "deleteRule", "options", "created", "updated")


def load_collections(conn: apsw.Connection) -> CollectionMap:
    """Every collection of the database (PocketBase's ``_collections``), keyed by name."""
    result = CollectionMap()
    try:
        rows = conn.execute(f"SELECT {', '.join(_COLLECTION_COLUMNS)} FROM _collections ORDER BY rowid").fetchall()
    except apsw.Error as err:
        raise RuntimeError(f"cannot read _collections: {err}") from err
    for values in rows:
        collection = Collection.from_row(dict(zip(_COLLECTION_COLUMNS, values, strict=True)))
        result[collection.name] = collection
    return result


def load_collection(conn: apsw.Connection, name_or_id: str) -> Collection | None:
    """One collection by id or name (case-insensitive), read from the database."""
    row = conn.execute(
        f"SELECT {', '.join(_COLLECTION_COLUMNS)} FROM _collections WHERE id = ? OR name = ? COLLATE NOCASE "
        "ORDER BY id = ? DESC LIMIT 1", (name_or_id, name_or_id, name_or_id)).fetchone()
    if row is None:
        return None
    return Collection.from_row(dict(zip(_COLLECTION_COLUMNS, row, strict=True)))


# ------------------------------------------------------------------------------------- tenant init


def init_tenant_database(data_dir: Path, *, with_auxiliary: bool = True) -> None:
    """Create ``data_dir/data.db`` (WAL) as stock PocketBase 0.40.6 creates a fresh data dir: bootstrap
    tables, the system collections and ``users`` (with fresh random token secrets), the settings row and
    the system migrations marked as applied. With ``with_auxiliary`` also ``auxiliary.db`` (the logs
    database PocketBase would otherwise create on its first start).

    Raises ``FileExistsError`` when ``data.db`` already exists.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "data.db"
    if path.exists():
        raise FileExistsError(f"{path} already exists")
    conn = apsw.Connection(str(path))
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        with conn:
            for statement in S.BOOTSTRAP_DDL:
                conn.execute(statement)
            for payload in S.SYSTEM_COLLECTION_PAYLOADS:
                create_collection(conn, _system_payload(payload))
            now = _now()
            conn.execute("INSERT INTO _params (id, value, created, updated) VALUES ('settings', ?, ?, ?)",
                         (orjson.dumps(S.DEFAULT_SETTINGS), now, now))
            applied = time.time_ns() // 1000
            for offset, name in enumerate(S.SYSTEM_MIGRATIONS):
                conn.execute("INSERT INTO _migrations (file, applied) VALUES (?, ?)", (name, applied + offset))
        conn.execute("PRAGMA optimize")
    except apsw.Error as err:
        conn.close()
        path.unlink(missing_ok=True)
        raise RuntimeError(f"cannot initialise {path}: {err}") from err
    conn.close()
    if with_auxiliary and not (data_dir / "auxiliary.db").exists():
        aux = apsw.Connection(str(data_dir / "auxiliary.db"))
        try:
            aux.execute("PRAGMA journal_mode = WAL")
            with aux:
                for statement in S.AUXILIARY_DDL:
                    aux.execute(statement)
        finally:
            aux.close()


def _system_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A system collection payload with the auth fields in PocketBase's order (they precede the custom
    fields when PocketBase builds these collections itself)."""
    result = copy.deepcopy(dict(payload))
    if result.get("type") == "auth":
        given = {f["name"]: f for f in result.get("fields", [])}
        ordered = [given.pop(name, None) or _default_auth_field(name) for name in SYSTEM_AUTH_FIELDS]
        result["fields"] = ordered + [f for f in result.get("fields", []) if f["name"] in given]
    return result


# ------------------------------------------------------------------------------------ field defaults


def _default_id_field() -> dict[str, Any]:
    return F.new_field_definition({
        "name": "id", "type": "text", "system": True, "primaryKey": True, "required": True, "min": 15, "max": 15,
        "pattern": F.DEFAULT_ID_PATTERN, "autogeneratePattern": "[a-z0-9]{15}"})


def _default_auth_field(name: str) -> dict[str, Any]:
    definitions: dict[str, dict[str, Any]] = {
        "password": {"name": "password", "type": "password", "system": True, "hidden": True, "required": True,
                     "min": 8},
        "tokenKey": {"name": "tokenKey", "type": "text", "system": True, "hidden": True, "min": 30, "max": 60,
                     "required": True, "autogeneratePattern": "[a-zA-Z0-9]{50}"},
        "email": {"name": "email", "type": "email", "system": True, "required": True},
        "emailVisibility": {"name": "emailVisibility", "type": "bool", "system": True},
        "verified": {"name": "verified", "type": "bool", "system": True},
    }
    return F.new_field_definition(definitions[name])


def _field_index_name(collection: Collection, column: str) -> str:
    name = f"idx_{column}_{collection.id or collection.name}"
    return name[:64]


def _init_default_fields(collection: Collection) -> None:
    """PocketBase's ``initDefaultFields``: the ``id`` primary key first; for auth collections the system
    ``password``, ``tokenKey``, ``email``, ``emailVisibility`` and ``verified`` fields (appended when
    missing, flags forced when present) and the unique ``tokenKey``/``email`` indexes."""
    if collection.type == "view":
        return
    id_field = collection.field("id")
    if id_field is None or id_field.get("type") != "text":
        collection.fields = [f for f in collection.fields if f.get("name") != "id"]
        collection.fields.insert(0, _default_id_field())
    else:
        id_field.update(system=True, required=True, primaryKey=True, hidden=False)
        if not id_field.get("pattern"):
            id_field["pattern"] = F.DEFAULT_ID_PATTERN
    if collection.type != "auth":
        return
    forced: dict[str, dict[str, Any]] = {
        "password": {"system": True, "hidden": True, "required": True},
        "tokenKey": {"system": True, "hidden": True, "required": True},
        "email": {"system": True, "hidden": False},
        "emailVisibility": {"system": True},
        "verified": {"system": True},
    }
    expected_type = {"password": "password", "tokenKey": "text", "email": "email", "emailVisibility": "bool",
                     "verified": "bool"}
    for name in SYSTEM_AUTH_FIELDS:
        existing = collection.field(name)
        if existing is not None and existing.get("type") == expected_type[name]:
            existing.update(forced[name])
        else:
            if existing is not None:
                collection.fields = [f for f in collection.fields if f is not existing]
            collection.fields.append(_default_auth_field(name))
        if name == "tokenKey" and single_column_unique_index(collection.indexes, "tokenKey") is None:
            collection.indexes.append(
                f"CREATE UNIQUE INDEX `{_field_index_name(collection, 'tokenKey')}` ON `{collection.name}` (`tokenKey`)")
        if name == "email" and single_column_unique_index(collection.indexes, "email") is None:
            collection.indexes.append(
                f"CREATE UNIQUE INDEX `{_field_index_name(collection, 'email')}` ON `{collection.name}` "
                "(`email`) WHERE `email` != ''")


def _unset_missing_mapped_fields(collection: Collection) -> None:
    mapped = collection.options.get("oauth2", {}).get("mappedFields", {})
    for key, value in list(mapped.items()):
        if value and collection.field(value) is None:
            mapped[key] = ""


# ------------------------------------------------------------------------------------ payload decode


def _decode_error(detail: str) -> CollectionValidationError:
    error = CollectionValidationError(DECODE_ERROR_MESSAGE, {})
    error.__notes__ = [detail]
    return error


def _decode_fields(raw_fields: Any, previous: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Decode a submitted ``fields`` list (PocketBase's ``FieldsList.UnmarshalJSON``): fields without an
    id get ``<type><crc32(name)>``, or - pbfast's data-preserving extension - the id of the existing field
    with the same name and type; a later field with the same name (and no id) replaces an earlier one."""
    if raw_fields is None:
        return []
    if not isinstance(raw_fields, list):
        raise _decode_error("fields: expected an array")
    previous_by_name = {f.get("name"): f for f in previous}
    decoded: list[dict[str, Any]] = []
    for raw in raw_fields:
        if isinstance(raw, Mapping) and not raw.get("id"):
            old = previous_by_name.get(raw.get("name"))
            if old is not None and old.get("type") == raw.get("type") and \
                    not any(f.get("id") == old.get("id") for f in decoded):
                raw = {**raw, "id": old["id"]}
        try:
            definition = F.new_field_definition(raw, existing_ids=[f["id"] for f in decoded])
        except F.FieldSettingsError as err:
            raise _decode_error(f"fields: {err}") from err
        explicit_id = isinstance(raw, Mapping) and bool(raw.get("id"))
        replaced = False
        for index, existing in enumerate(decoded):
            same = existing["id"] == definition["id"] if explicit_id else (
                definition["name"] != "" and existing["name"] == definition["name"])
            if same:
                if not explicit_id:
                    definition["id"] = existing["id"]
                decoded[index] = definition
                replaced = True
                break
        if not replaced:
            decoded.append(definition)
    return decoded


def _apply_payload(collection: Collection, payload: Mapping[str, Any], *, is_new: bool) -> None:
    """Bind a submitted JSON body onto ``collection`` the way PocketBase binds it onto its model."""
    if not isinstance(payload, Mapping):
        raise _decode_error("the body must be an object")
    for key in ("id", "name", "type"):
        if key in payload:
            value = payload[key]
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise _decode_error(f"{key}: expected a string")
            if key != "id" or is_new:
                setattr(collection, key, value)
            elif value != collection.id:
                collection.id = value  # rejected by validation (ids cannot change)
    if "system" in payload:
        if not isinstance(payload["system"], bool | None):
            raise _decode_error("system: expected a boolean")
        collection.system = bool(payload["system"])
    for key in RULE_KEYS:
        if key in payload:
            value = payload[key]
            if value is not None and not isinstance(value, str):
                raise _decode_error(f"{key}: expected a string or null")
            setattr(collection, key, value)
    if "indexes" in payload:
        indexes = payload["indexes"]
        if indexes is None:
            indexes = []
        if not isinstance(indexes, list) or not all(isinstance(i, str) for i in indexes):
            raise _decode_error("indexes: expected an array of strings")
        collection.indexes = list(indexes)
    if "fields" in payload:
        collection.fields = _decode_fields(payload["fields"], collection.fields)
    if collection.type == "auth":
        patch = {k: payload[k] for k in AUTH_OPTION_KEYS if k in payload}
        for key in ("authRule", "manageRule"):
            if key in patch and patch[key] is not None and not isinstance(patch[key], str):
                raise _decode_error(f"{key}: expected a string or null")
        for key, value in patch.items():
            if key not in ("authRule", "manageRule") and value is not None and not isinstance(value, dict):
                raise _decode_error(f"{key}: expected an object")
        merged = _merge(collection.options, patch)
        if "oauth2" in patch and isinstance(patch["oauth2"], Mapping) and "providers" in patch["oauth2"]:
            providers = patch["oauth2"]["providers"]
            if providers is not None and not isinstance(providers, list):
                raise _decode_error("oauth2.providers: expected an array")
        collection.options = normalize_auth_options(merged)
    elif collection.type == "view":
        if "viewQuery" in payload:
            query = payload["viewQuery"]
            if query is not None and not isinstance(query, str):
                raise _decode_error("viewQuery: expected a string")
            collection.options = {"viewQuery": query or ""}


def _blank_collection(collection_type: str, name: str) -> Collection:
    """PocketBase's ``NewCollection``: defaults of the type (an unknown type gets base defaults)."""
    collection = Collection(id="", name=name, type=collection_type)
    if collection_type == "auth":
        collection.options = S.default_auth_options()
    elif collection_type == "view":
        collection.options = {"viewQuery": ""}
    return collection


def scaffolds() -> dict[str, dict[str, Any]]:
    """PocketBase's ``GET /api/collections/meta/scaffolds``: a new collection of each type as the API
    shows it (no id, no name; default indexes named after a random 10 characters id)."""
    random_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(10))
    result: dict[str, dict[str, Any]] = {}
    for collection_type in ("auth", "base", "view"):
        collection = _blank_collection(collection_type, "")
        collection.id = random_id
        _init_default_fields(collection)
        collection.id = ""
        result[collection_type] = collection.to_api()
    return result


# ---------------------------------------------------------------------------------------- validation


def _table_exists(conn: apsw.Connection, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type IN ('table', 'view') AND name = ? COLLATE NOCASE "
                       "LIMIT 1", (name,)).fetchone()
    return row is not None


def _validate_name(conn: apsw.Connection, collection: Collection, original: Collection | None,
                   others: CollectionMap) -> dict[str, Any] | None:
    name = collection.name
    if name == "":
        return dict(_REQUIRED)
    if len(name.encode()) > 255:
        return _item("validation_length_out_of_range", "the length must be between 1 and 255", {"min": 1, "max": 255})
    if "_via_" in name.lower():
        return _item("validation_found_via", 'The value cannot contain "_via_".')
    if not _NAME_RE.fullmatch(name):
        return _item("validation_match_invalid", "must be in a valid format")
    if original is not None and original.system and name != original.name:
        return _item("validation_collection_system_name_change", "System collection name cannot be changed.")
    own_id = original.id if original is not None else None
    for other in others.values():
        if other.id != own_id and other.name.lower() == name.lower():
            return _item("validation_collection_name_exists", "Collection name must be unique (case insensitive).")
    if any(other.id == name for other in others.values()):
        return _item("validation_collection_name_id_duplicate", "The name must not match an existing collection id.")
    if (original is None or original.name != name) and _table_exists(conn, name):
        return _item("validation_collection_name_invalid", "The name shouldn't match with an existing internal table.")
    return None


def _check_rule(collection: Collection, rule: str | None, others: CollectionMap) -> dict[str, Any] | None:
    if not rule or _rule_checker is None:
        return None
    try:
        _rule_checker(collection, rule, others)
    except ValueError as err:
        return _item("validation_invalid_rule", f"Invalid rule. Raw error: {err}")
    return None


def _validate_fields(collection: Collection, original: Collection | None, others: CollectionMap,
                     ) -> dict[str, Any] | None:
    fields_list = collection.fields
    seen_ids: set[str] = set()
    seen_names: set[str] = set()
    for index, definition in enumerate(fields_list):
        if definition["id"] in seen_ids:
            return {str(index): {"id": _item("validation_duplicated_field_id",
                                             f'Duplicated or invalid field id "{definition["id"]}"')}}
        if definition["name"].lower() in seen_names:
            return {str(index): {"name": _item("validation_duplicated_field_name",
                                               "Duplicated or invalid field name {{.fieldName}}".replace(
                                                   "{{.fieldName}}", definition["name"]),
                                               {"fieldName": definition["name"]})}}
        seen_ids.add(definition["id"])
        seen_names.add(definition["name"].lower())
    minimum = _check_min_fields(collection)
    if minimum is not None:
        return minimum
    if collection.type != "view" and original is not None:
        for old in original.fields:
            if not old.get("system"):
                continue
            renamed = collection.field_by_id(old["id"])
            if renamed is None or renamed["name"] != old["name"]:
                return _item("validation_system_field_change", "System fields cannot be deleted or renamed.")
        type_errors = {}
        for index, definition in enumerate(fields_list):
            stored = original.field_by_id(definition["id"])
            if stored is not None and stored["type"] != definition["type"]:
                type_errors[str(index)] = _item("validation_field_type_change", "Field type cannot be changed.")
        if type_errors:
            return type_errors
    if collection.type == "auth":
        reserved = {str(i): {"name": _item("validation_reserved_field_name",
                                           "The field name is reserved and cannot be used.")}
                    for i, f in enumerate(fields_list) if f["name"] in RESERVED_AUTH_FIELD_NAMES}
        if reserved:
            return reserved
    settings_errors = {}
    for index, definition in enumerate(fields_list):
        previous = original.field_by_id(definition["id"]) if original is not None else None
        errors = F.validate_field_settings(
            definition, collection_fields=fields_list, collection_type=collection.type, old_field=previous,
            collection_exists=lambda cid: others.by_id(cid) is not None or cid == collection.id,
            is_view_collection=lambda cid: (others.by_id(cid) or collection).type == "view")
        if errors:
            settings_errors[str(index)] = errors
    return settings_errors or None


def _check_min_fields(collection: Collection) -> dict[str, Any] | None:
    if not collection.fields:
        return dict(_REQUIRED)
    id_field = collection.field("id")
    if id_field is None or id_field["type"] != "text" or not id_field.get("primaryKey"):
        return _item("validation_missing_primary_key", 'Missing or invalid "id" PK field.')
    if collection.type != "auth":
        return None
    checks = (("password", "password", True), ("tokenKey", "text", True), ("email", "email", False),
              ("emailVisibility", "bool", False), ("verified", "bool", False))
    for name, kind, hidden in checks:
        definition = collection.field(name)
        if definition is None or definition["type"] != kind:
            return _item(f"validation_missing_{name}_field", f'System "{name}" field is required.')
        if hidden and not (definition.get("hidden") and definition.get("system")):
            return {name: _item("validation_must_be_system_and_hidden",
                                'The field must be marked as "System" and "Hidden".')}
        if not hidden and not definition.get("system"):
            return {name: _item("validation_must_be_system", 'The field must be marked as "System".')}
    return None


def _validate_indexes(conn: apsw.Connection, collection: Collection, original: Collection | None,
                      ) -> dict[str, Any] | None:
    if collection.type == "view" and collection.indexes:
        return _item("validation_indexes_not_supported", "View collections don't support indexes.")
    names: set[str] = set()
    definitions: set[str] = set()
    for index, raw in enumerate(collection.indexes):
        parsed = parse_index(raw)
        parsed.table_name = "validator"
        if not parsed.is_valid():
            return {str(index): _item("validation_invalid_index_expression", "Invalid CREATE INDEX expression.")}
        if parsed.index_name.lower() in names:
            return {str(index): _item("validation_duplicated_index_name", "The index name already exists.")}
        names.add(parsed.index_name.lower())
        used = conn.execute(
            "SELECT tbl_name FROM sqlite_master WHERE type = 'index' AND LOWER(tbl_name) != LOWER(?) "
            "AND LOWER(tbl_name) != LOWER(?) AND LOWER(name) = LOWER(?) LIMIT 1",
            (original.name if original else "", collection.name, parsed.index_name)).fetchone()
        if used:
            return {str(index): _item("validation_existing_index_name",
                                      f"The index name is already used in {used[0]} collection.",
                                      {"usedTableName": used[0]})}
        parsed.schema_name = parsed.index_name = "validator"
        definition = parsed.build()
        if definition in definitions:
            return {str(index): _item("validation_duplicated_index_definition", "The index definition already exists.")}
        definitions.add(definition)
    if original is not None:
        problem = _check_system_unique_indexes(collection, original)
        if problem is not None:
            return problem
    if collection.type == "auth":
        for name in ("tokenKey", "email"):
            if single_column_unique_index(collection.indexes, name) is None:
                return _item("validation_missing_required_unique_index",
                             f'Missing required unique index for field "{name}".', {"fieldName": name})
    return None


def _check_system_unique_indexes(collection: Collection, original: Collection) -> dict[str, Any] | None:
    """Unique indexes on system fields must be kept (same columns) when a collection is updated."""
    def shape(parsed: ParsedIndex, like: ParsedIndex) -> str:
        clone = copy.deepcopy(parsed)
        clone.schema_name, clone.index_name, clone.table_name, clone.where = (
            like.schema_name, like.index_name, like.table_name, like.where)
        for column in clone.columns:
            column.collate = column.sort = ""
        return clone.build()

    for raw in original.indexes:
        old = parse_index(raw)
        if not old.unique:
            continue
        old_shape = shape(old, old)
        for column in old.columns:
            system_field = next((f for f in original.fields
                                 if f.get("system") and f["name"].lower() == column.name.lower()), None)
            if system_field is None:
                continue
            if not any(shape(parse_index(new), old) == old_shape for new in collection.indexes):
                return _item("validation_invalid_unique_system_field_index",
                             f"Unique index definition on system fields ({system_field['name']}) is invalid or missing.",
                             {"fieldName": system_field["name"]})
            break
    return None


def _validate_auth_options(collection: Collection, original: Collection | None,
                           others: CollectionMap) -> dict[str, Any]:
    options = collection.options
    errors: dict[str, Any] = {}
    original_options = original.options if original is not None and original.type == "auth" else {}

    def system_rule_changed(key: str) -> bool:
        return original is not None and original.system and original_options.get(key) != options.get(key)

    for key in ("authRule", "manageRule"):
        value = options.get(key)
        if key == "manageRule" and value == "":
            errors[key] = _item("validation_nil_or_not_empty_required", "cannot be blank")
            continue
        problem = _check_rule(collection, value, others)
        if problem is None and system_rule_changed(key):
            problem = _item("validation_collection_system_rule_change", "System collection API rule cannot be changed.")
        if problem:
            errors[key] = problem

    def template_errors(template: Mapping[str, Any]) -> dict[str, Any]:
        return {k: dict(_REQUIRED) for k in ("subject", "body") if not template.get(k)}

    alert = template_errors(options["authAlert"]["emailTemplate"])
    if alert:
        errors["authAlert"] = {"emailTemplate": alert}
    if options["passwordAuth"]["enabled"] and not options["passwordAuth"]["identityFields"]:
        errors["passwordAuth"] = {"identityFields": dict(_REQUIRED)}
    oauth2 = options["oauth2"]
    if oauth2["enabled"]:
        provider_errors: dict[str, Any] = {}
        seen: set[str] = set()
        for index, provider in enumerate(oauth2["providers"]):
            problems = {k: dict(_REQUIRED) for k in ("name", "clientId", "clientSecret") if not provider.get(k)}
            if not problems and provider["name"] in seen:
                problems = {"name": _item("validation_duplicated_provider",
                                          f"The provider {provider['name']} is already registered.",
                                          {"name": provider["name"]})}
            seen.add(provider["name"])
            if problems:
                provider_errors[str(index)] = problems
        if provider_errors:
            errors["oauth2"] = {"providers": provider_errors}
    otp = options["otp"]
    otp_errors: dict[str, Any] = {}
    if otp["enabled"]:
        if not otp["duration"]:
            otp_errors["duration"] = dict(_REQUIRED)
        elif not 10 <= otp["duration"] <= 86400:
            otp_errors["duration"] = _range_item(otp["duration"], 10, 86400)
        if not otp["length"]:
            otp_errors["length"] = dict(_REQUIRED)
        elif otp["length"] < 4:
            otp_errors["length"] = _range_item(otp["length"], 4, None)
    template = template_errors(otp["emailTemplate"])
    if template:
        otp_errors["emailTemplate"] = template
    if otp_errors:
        errors["otp"] = otp_errors
    mfa = options["mfa"]
    if mfa["enabled"]:
        if not mfa["duration"]:
            errors["mfa"] = {"duration": dict(_REQUIRED)}
        elif not 10 <= mfa["duration"] <= 86400:
            errors["mfa"] = {"duration": _range_item(mfa["duration"], 10, 86400)}
    for key in TOKEN_KEYS:
        token = options[key]
        token_errors: dict[str, Any] = {}
        if not token["secret"]:
            token_errors["secret"] = dict(_REQUIRED)
        elif not 30 <= len(token["secret"].encode()) <= 255:
            token_errors["secret"] = _item("validation_length_out_of_range",
                                           "the length must be between 30 and 255", {"min": 30, "max": 255})
        if not token["duration"]:
            token_errors["duration"] = dict(_REQUIRED)
        elif not 10 <= token["duration"] <= MAX_TOKEN_DURATION:
            token_errors["duration"] = _range_item(token["duration"], 10, MAX_TOKEN_DURATION)
        if token_errors:
            errors[key] = token_errors
    for key in TEMPLATE_KEYS:
        problems = template_errors(options[key])
        if problems:
            errors[key] = problems
    if errors:
        return errors
    if mfa["enabled"]:
        enabled = sum(1 for on in (options["passwordAuth"]["enabled"], oauth2["enabled"], otp["enabled"]) if on)
        if enabled < 2:
            return {"mfa": {"enabled": _item("validation_mfa_not_enough_auths",
                                             "MFA requires at least 2 auth methods to be enabled.")}}
        if mfa["rule"]:
            problem = _check_rule(collection, mfa["rule"], others)
            if problem is None and original is not None and original.system and \
                    original_options.get("mfa", {}).get("rule") != mfa["rule"]:
                problem = _item("validation_collection_system_rule_change",
                                "System collection API rule cannot be changed.")
            if problem:
                return {"mfa": {"rule": problem}}
    if options["passwordAuth"]["enabled"]:
        for name in dict.fromkeys(options["passwordAuth"]["identityFields"]):
            if collection.field(name) is None:
                return {"passwordAuth": {"identityFields": _item(
                    "validation_missing_field", f"Invalid or missing field {name}", {"fieldName": name})}}
            if single_column_unique_index(collection.indexes, name) is None:
                return {"passwordAuth": {"identityFields": _item(
                    "validation_missing_unique_constraint", f"The field {name} doesn't have a UNIQUE constraint.",
                    {"fieldName": name})}}
    return {}


def _range_item(value: int, low: int, high: int | None) -> dict[str, Any]:
    if value < low:
        return _item("validation_min_greater_equal_than_required", f"must be no less than {low}", {"threshold": low})
    return _item("validation_max_less_equal_than_required", f"must be no greater than {high}", {"threshold": high})


def _validate(conn: apsw.Connection, collection: Collection, original: Collection | None,
              others: CollectionMap) -> dict[str, Any]:
    """PocketBase's collection validator: ``{key: error item or nested errors}`` (empty when valid)."""
    errors: dict[str, Any] = {}
    if not collection.id:
        errors["id"] = dict(_REQUIRED)
    elif original is None:
        if len(collection.id.encode()) > 100:
            errors["id"] = _item("validation_length_out_of_range", "the length must be between 1 and 100",
                                 {"min": 1, "max": 100})
        elif not _NAME_RE.fullmatch(collection.id):
            errors["id"] = _item("validation_match_invalid", "must be in a valid format")
        elif conn.execute("SELECT 1 FROM _collections WHERE id = ? LIMIT 1", (collection.id,)).fetchone():
            errors["id"] = _item("validation_invalid_or_existing_id", "The model id is invalid or already exists.")
    elif collection.id != original.id:
        errors["id"] = _item("validation_values_mismatch", "Values don't match.")
    if original is not None and collection.system != original.system:
        errors["system"] = _item("validation_collection_system_flag_change", "System collection state cannot be changed.")
    if not collection.type:
        errors["type"] = dict(_REQUIRED)
    elif collection.type not in COLLECTION_TYPES:
        errors["type"] = _item("validation_in_invalid", "must be a valid value")
    elif original is not None and collection.type != original.type:
        errors["type"] = _item("validation_collection_type_change", "Collection type cannot be changed.")
    name_error = _validate_name(conn, collection, original, others)
    if name_error:
        errors["name"] = name_error
    fields_error = _validate_fields(collection, original, others)
    if fields_error:
        errors["fields"] = fields_error
    for key in RULE_KEYS:
        value = getattr(collection, key)
        problem = None
        if collection.type == "view" and key in ("createRule", "updateRule", "deleteRule") and value is not None:
            problem = _item("validation_nil", "must be blank")
        problem = problem or _check_rule(collection, value, others)
        if problem is None and original is not None and original.system and getattr(original, key) != value:
            problem = _item("validation_collection_system_rule_change", "System collection API rule cannot be changed.")
        if problem:
            errors[key] = problem
    index_error = _validate_indexes(conn, collection, original)
    if index_error:
        errors["indexes"] = index_error
    if collection.type == "auth":
        errors.update(_validate_auth_options(collection, original, others))
    return errors


# ------------------------------------------------------------------------------------------ tables


def _create_table(conn: apsw.Connection, collection: Collection) -> None:
    columns = sorted((f["name"], F.column_definition(f)) for f in collection.fields)
    body = ", ".join(f"{backquote(name)} {definition}" for name, definition in columns)
    conn.execute(f"CREATE TABLE {backquote(collection.name)} ({body})")


def _create_indexes(conn: apsw.Connection, collection: Collection) -> None:
    errors: dict[str, Any] = {}
    for position, raw in enumerate(collection.indexes):
        parsed = parse_index(raw)
        parsed.table_name = collection.name
        if not parsed.is_valid():
            errors[str(position)] = _item("validation_invalid_index_expression", "Invalid CREATE INDEX expression.")
            continue
        try:
            execute_one(conn, parsed.build())
        except (apsw.Error, SqlRefused) as err:
            errors[str(position)] = _item("validation_invalid_index_expression",
                                          f"Failed to create index {parsed.index_name} - {sqlite_error_text(err)}.")
    if errors:
        raise CollectionValidationError("", {"indexes": errors})


def _drop_indexes(conn: apsw.Connection, collection: Collection) -> None:
    for raw in collection.indexes:
        parsed = parse_index(raw)
        if parsed.index_name:
            conn.execute(f"DROP INDEX IF EXISTS {backquote(parsed.index_name)}")


def _random_suffix(length: int = 5) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _sync_table(conn: apsw.Connection, new: Collection, old: Collection | None) -> None:
    """PocketBase's ``SyncRecordTableSchema``: create the table, or migrate it in place (data kept)."""
    if old is None or not _table_exists(conn, old.name):
        _create_table(conn, new)
        _create_indexes(conn, new)
        return
    table = new.name
    rename_table = old.name.lower() != new.name.lower() or old.name != new.name
    fields_changed = [F.normalize_field(f) for f in old.fields] != [F.normalize_field(f) for f in new.fields]
    update_indexes = rename_table or fields_changed or old.indexes != new.indexes
    if update_indexes:
        _drop_indexes(conn, old)
    if rename_table:
        conn.execute(f"ALTER TABLE {backquote(old.name)} RENAME TO {backquote(new.name)}")
    for old_field in old.fields:
        if new.field_by_id(old_field["id"]) is None:
            try:
                conn.execute(f"ALTER TABLE {backquote(table)} DROP COLUMN {backquote(old_field['name'])}")
            except apsw.Error as err:
                raise RuntimeError(f"failed to drop column {old_field['name']}: {err}") from err
    pending: dict[str, str] = {}
    for new_field in new.fields:
        previous = old.field_by_id(new_field["id"])
        if previous is None:
            temp = new_field["name"] + _random_suffix()
            pending[temp] = new_field["name"]
            conn.execute(f"ALTER TABLE {backquote(table)} ADD {backquote(temp)} {F.column_definition(new_field)}")
        elif previous["name"] != new_field["name"]:
            temp = new_field["name"] + _random_suffix()
            pending[temp] = new_field["name"]
            conn.execute(f"ALTER TABLE {backquote(table)} RENAME COLUMN {backquote(previous['name'])} TO {backquote(temp)}")
    for temp, final in pending.items():
        conn.execute(f"ALTER TABLE {backquote(table)} RENAME COLUMN {backquote(temp)} TO {backquote(final)}")
    _normalize_single_multiple(conn, new, old)
    if update_indexes:
        _create_indexes(conn, new)


def _normalize_single_multiple(conn: apsw.Connection, new: Collection, old: Collection) -> None:
    """Convert the stored values of fields switched between single and multiple (``maxSelect``)."""
    for new_field in new.fields:
        old_field = old.field_by_id(new_field["id"])
        was_multiple = F.is_multiple(old_field) if old_field is not None else False
        if was_multiple == F.is_multiple(new_field):
            continue
        views = conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL AND type = 'view'").fetchall()
        for view_name, _ in views:
            conn.execute(f"DROP VIEW IF EXISTS {backquote(str(view_name))}")
        name = new_field["name"]
        temp = "_" + name + _random_suffix()
        table = backquote(new.name)
        conn.execute(f"ALTER TABLE {table} RENAME COLUMN {backquote(name)} TO {backquote(temp)}")
        conn.execute(f"ALTER TABLE {table} ADD {backquote(name)} {F.column_definition(new_field)}")
        column, source = backquote(name), backquote(temp)
        if F.is_multiple(new_field):
            conn.execute(
                f"UPDATE {table} SET {column} = (CASE WHEN COALESCE({source}, '') = '' THEN '[]' ELSE (CASE WHEN "
                f"json_valid({source}) AND json_type({source}) == 'array' THEN {source} ELSE json_array({source}) "
                "END) END)")
        else:
            conn.execute(
                f"UPDATE {table} SET {column} = (CASE WHEN COALESCE({source}, '[]') = '[]' THEN '' ELSE (CASE WHEN "
                f"json_valid({source}) AND json_type({source}) == 'array' THEN "
                f"COALESCE(json_extract({source}, '$[#-1]'), '') ELSE {source} END) END)")
        conn.execute(f"ALTER TABLE {table} DROP COLUMN {backquote(temp)}")
        for _, sql in views:
            conn.execute(str(sql))


# --------------------------------------------------------------------------------------------- views


def _split_top_level(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside quotes and parentheses (PocketBase's tokenizer)."""
    parts: list[str] = []
    depth, quote, current = 0, "", []
    for char in text:
        if quote:
            current.append(char)
            if char == quote:
                quote = ""
            continue
        if char in "'\"`":
            quote = char
        elif char == "[":
            quote = "]"
        elif char == "(":
            depth += 1
        elif char == ")":
            depth = max(depth - 1, 0)
        elif char == separator and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    tail = "".join(current).strip()
    if tail:
        parts.append(tail)
    return parts


_CAST_RE: Final = re.compile(r"(?is)^cast\s*\(.*\s+as\s+(\w+)\s*\)$")
_SELECT_RE: Final = re.compile(r"(?is)^\s*select\s+(?:distinct\s+|all\s+)?")


def _normalize_view_query(query: str) -> str:
    return query.strip().strip(";")


def _select_expressions(query: str) -> list[str]:
    """The select-list expressions of ``query`` (top level, up to its first top-level FROM)."""
    head = _SELECT_RE.match(query)
    if not head:
        return []
    rest = query[head.end():]
    depth, quote, end = 0, "", len(rest)
    index = 0
    while index < len(rest):
        char = rest[index]
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"`":
            quote = char
        elif char == "[":
            quote = "]"
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif depth == 0 and rest[index:index + 4].lower() == "from" and (index == 0 or not rest[index - 1].isalnum()
                                                                       and rest[index - 1] != "_") \
                and (index + 4 >= len(rest) or not (rest[index + 4].isalnum() or rest[index + 4] == "_")):
            end = index
            break
        index += 1
    return _split_top_level(rest[:end], ",")


def _view_fields(conn: apsw.Connection, query: str, others: CollectionMap) -> list[dict[str, Any]]:
    """The fields of a view collection (PocketBase's ``CreateViewFields``): columns read straight from a
    collection's field clone that field (new ``_clone_xxxx`` id), a collection's ``id`` becomes a single
    relation to it, ``count()``/``total()``/``cast(... as type)`` become number/text/bool fields, anything
    else a json field; an ``id`` column is required."""
    query = _normalize_view_query(query)
    expressions = _select_expressions(query)
    for expression in expressions:
        if expression == "*" or expression.endswith(".*"):
            raise ValueError("wildcard columns (*) are not supported - manually type the collection field names "
                             "you want the view query to have")
    _check_view_table_info(conn, query)
    read_only_select(conn, query)  # after the table info check, whose errors PocketBase answers first
    described = apsw.ext.query_info(conn, f"SELECT * FROM ({query})").description_full or ()
    by_table = {c.name.lower(): c for c in others.values()}
    result: list[dict[str, Any]] = []
    has_id = False
    for position, (name, _decltype, _database, table, origin) in enumerate(described):
        expression = expressions[position] if len(expressions) == len(described) else ""
        lowered = expression.lower()
        definition: dict[str, Any]
        if name == "id":
            has_id = True
            definition = {"name": "id", "type": "text", "system": True, "required": True, "primaryKey": True,
                          "pattern": F.DEFAULT_ID_PATTERN}
        elif lowered.startswith("count("):
            definition = {"name": name, "type": "number", "onlyInt": True}
        elif lowered.startswith("total("):
            definition = {"name": name, "type": "number"}
        elif (cast := _CAST_RE.match(lowered.rsplit(" as ", 1)[0] if ")" in lowered else lowered)) and \
                cast.group(1) in ("real", "decimal", "numeric", "int", "integer", "text", "boolean", "bool"):
            kind = cast.group(1)
            definition = ({"name": name, "type": "number", "onlyInt": kind in ("int", "integer")}
                          if kind in ("real", "decimal", "numeric", "int", "integer") else
                          {"name": name, "type": "text"} if kind == "text" else {"name": name, "type": "bool"})
        else:
            source = by_table.get(str(table).lower()) if table else None
            source_field = source.field(str(origin)) if source is not None and origin else None
            if source is not None and str(origin).lower() == "id":
                definition = {"name": name, "type": "relation", "maxSelect": 1, "collectionId": source.id}
            elif source_field is not None:
                definition = copy.deepcopy(source_field)
                definition["id"] = "_clone_" + _random_suffix(4)
                definition["name"] = name
            else:
                definition = {"name": name, "type": "json", "maxSize": 1}
        result.append(F.new_field_definition(definition, existing_ids=[f["id"] for f in result]))
    if not has_id:
        raise _ViewFieldsError("missing required id column (you can use `(ROW_NUMBER() OVER()) as id` if you "
                               "don't have one)", result)
    return result


def _check_view_table_info(conn: apsw.Connection, query: str) -> None:
    """Create the view under a temporary name and read its table info, as PocketBase does to validate a
    view query (missing tables or columns only surface then, worded as SQLite words them there)."""
    temp = "_temp_" + _random_suffix(6)
    conn.execute("SAVEPOINT pb_view_check")
    try:
        execute_one(conn, f"CREATE VIEW {backquote(temp)} AS SELECT * FROM ({query})")
        conn.execute("SELECT * FROM pragma_table_info(?)", (temp,)).fetchall()
    finally:
        conn.execute("ROLLBACK TO pb_view_check")
        conn.execute("RELEASE pb_view_check")


class _ViewFieldsError(ValueError):
    """A view query without an ``id`` column; ``fields`` are the ones resolved anyway (PocketBase keeps
    them, so the collection then fails the primary key check too)."""

    def __init__(self, message: str, resolved: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.fields = resolved


def _save_view(conn: apsw.Connection, name: str, query: str) -> None:
    conn.execute(f"DROP VIEW IF EXISTS {backquote(name)}")
    execute_one(conn, f"CREATE VIEW {backquote(name)} AS SELECT * FROM ({read_only_select(conn, query)})")


# ---------------------------------------------------------------------------------- create/update


def _collection_id_for(conn: apsw.Connection, collection: Collection) -> str:
    base = "pbc_" + str(zlib.crc32((collection.type + collection.name).encode()))
    candidate = base
    for suffix in range(2, 1000):
        if conn.execute("SELECT 1 FROM _collections WHERE id = ? LIMIT 1", (candidate,)).fetchone() is None:
            break
        candidate = f"{base}{suffix}"
    return candidate


def _normalize_index_tables(collection: Collection) -> None:
    for position, raw in enumerate(collection.indexes):
        parsed = parse_index(raw)
        if parsed.table_name == collection.name:
            continue
        parsed.table_name = collection.name
        built = parsed.build()
        if built:
            collection.indexes[position] = built


def _save(conn: apsw.Connection, collection: Collection, original: Collection | None, failure: str) -> Collection:
    """Validate and persist ``collection`` (new when ``original`` is None) with its table/view."""
    others = load_collections(conn)
    view_error: str | None = None
    if collection.type == "view":
        try:
            collection.fields = _view_fields(conn, collection.view_query, others)
        except (ValueError, apsw.Error) as err:
            view_error = sqlite_error_text(err) if isinstance(err, apsw.Error) else str(err)
            collection.fields = err.fields if isinstance(err, _ViewFieldsError) else []
    errors = _validate(conn, collection, original, others)
    if collection.type == "view":
        if not collection.view_query:
            errors.setdefault("viewQuery", dict(_REQUIRED))
        elif view_error is not None:
            errors.setdefault("viewQuery", _item("validation_invalid_view_query",
                                                 "Invalid query - " + view_error[:500]))
    if errors:
        raise CollectionValidationError(failure, errors)
    row = collection.to_row()
    if original is None:
        conn.execute(f"INSERT INTO _collections ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                     list(row.values()))
    else:
        assignments = ", ".join(f"{backquote(key)} = ?" for key in row if key != "id")
        conn.execute(f"UPDATE _collections SET {assignments} WHERE id = ?",
                     [value for key, value in row.items() if key != "id"] + [original.id])
    try:
        if collection.type == "view":
            if original is not None:
                conn.execute(f"DROP VIEW IF EXISTS {backquote(original.name)}")
            _save_view(conn, collection.name, collection.view_query)
        else:
            _sync_table(conn, collection, original)
            conn.execute("PRAGMA optimize")  # as PocketBase does after every table sync
    except CollectionValidationError as err:
        raise CollectionValidationError(failure, err.data) from err
    except (apsw.Error, RuntimeError) as err:
        raise CollectionValidationError(f"{failure[:-1]}. Raw error: \n{sqlite_error_text(err)}", {}) from err
    return collection


def create_collection(conn: apsw.Connection, payload: Mapping[str, Any]) -> Collection:
    """Create a collection from a ``POST /api/collections`` body (PocketBase semantics).

    The id defaults to ``pbc_<crc32(type+name)>``; the ``id`` primary key field is added (base/auth), and
    for auth collections the system fields, their unique indexes and default options with fresh secrets.
    ``created``/``updated`` autodate fields are *not* added (PocketBase does not either; its UI does).
    The table (or SQL view) is created, all in one transaction. Raises :class:`CollectionValidationError`.
    """
    if not isinstance(payload, Mapping):
        raise _decode_error("the body must be an object")
    collection_type = payload.get("type") if isinstance(payload.get("type"), str) else ""
    name = payload.get("name") if isinstance(payload.get("name"), str) else ""
    collection = _blank_collection(collection_type or "base", name or "")
    if not collection_type:
        collection.type = "base"
    _apply_payload(collection, payload, is_new=True)
    if not collection.type:
        collection.type = "base"
    with conn:
        if not collection.id:
            collection.id = _collection_id_for(conn, collection)
        collection.created = collection.updated = _now()
        _init_default_fields(collection)
        if collection.type == "auth":
            _unset_missing_mapped_fields(collection)
        _normalize_index_tables(collection)
        saved = _save(conn, collection, None, "Failed to create collection.")
    return saved


def update_collection(conn: apsw.Connection, collection: Collection, payload: Mapping[str, Any]) -> Collection:
    """Apply a ``PATCH /api/collections/{name}`` body (PocketBase semantics) and migrate the table.

    Absent keys keep their values; ``fields`` replaces the whole list (a field is matched to its stored
    column by ``id``: a new id adds a column, a changed name renames it, a missing id drops it; fields sent
    without an id reuse the id of the stored field with the same name and type, so the data is kept);
    auth options merge key by key. Changing ``authRule`` regenerates the auth token secret. Rows keep
    their data across renames; single/multiple value switches convert the stored values; indexes are
    rebuilt. One transaction. Raises :class:`CollectionValidationError`.
    """
    with conn:
        original = load_collection(conn, collection.id)
        if original is None:
            raise CollectionValidationError("The requested resource wasn't found.", {})
        updated = copy.deepcopy(original)
        _apply_payload(updated, payload, is_new=False)
        updated.updated = _now()
        _init_default_fields(updated)
        if updated.type == "auth":
            _unset_missing_mapped_fields(updated)
            if original.type == "auth" and (original.options.get("authRule") or "") != \
                    (updated.options.get("authRule") or ""):
                updated.options["authToken"]["secret"] = S.random_secret()
        _normalize_index_tables(updated)
        saved = _save(conn, updated, original, "Failed to update collection.")
    return saved


def _references(collections: CollectionMap, target: Collection) -> list[tuple[Collection, dict[str, Any]]]:
    return [(other, definition) for other in collections.values() for definition in other.fields
            if definition.get("type") == "relation" and definition.get("collectionId") == target.id]


def delete_collection(conn: apsw.Connection, collection: Collection) -> None:
    """Delete a collection and its table/view (PocketBase semantics): system collections and collections
    referenced by another collection's relation field cannot be deleted. The auth records' MFA/OTP/
    external-auth/auth-origin rows are removed too."""
    with conn:
        current = load_collection(conn, collection.id)
        if current is None:
            raise CollectionValidationError("The requested resource wasn't found.", {})
        if current.system:
            raise CollectionValidationError("Failed to delete collection.", {})
        collections = load_collections(conn)
        referencing = sorted({other.name for other, _ in _references(collections, current) if other.id != current.id})
        if referencing:
            raise CollectionValidationError(
                "Failed to delete collection probably due to existing reference in " + ", ".join(referencing) + ".", {})
        try:
            if current.type == "view":
                conn.execute(f"DROP VIEW IF EXISTS {backquote(current.name)}")
            else:
                conn.execute(f"DROP TABLE IF EXISTS {backquote(current.name)}")
        except apsw.Error as err:
            raise CollectionValidationError("Failed to delete collection.", {}) from err
        conn.execute("DELETE FROM _collections WHERE id = ?", (current.id,))
        if current.type == "auth":
            _delete_auth_side_rows(conn, collections, current.id, None)


def _delete_auth_side_rows(conn: apsw.Connection, collections: CollectionMap, collection_id: str,
                           record_ids: Sequence[str] | None) -> None:
    for name in ("_externalAuths", "_mfas", "_otps", "_authOrigins"):
        if name not in collections:
            continue
        if record_ids is None:
            conn.execute(f"DELETE FROM {backquote(name)} WHERE collectionRef = ?", (collection_id,))
        else:
            for chunk_start in range(0, len(record_ids), 500):
                chunk = list(record_ids[chunk_start:chunk_start + 500])
                conn.execute(f"DELETE FROM {backquote(name)} WHERE collectionRef = ? AND recordRef IN "
                             f"({', '.join('?' * len(chunk))})", [collection_id, *chunk])


def truncate_collection(conn: apsw.Connection, collection: Collection) -> None:
    """Delete every record of a collection, as PocketBase's truncate does (each record deleted as by
    :func:`delete_records`): records of other collections that reference them through ``cascadeDelete``
    relations are deleted too (recursively), other references are cleared, and a required non-cascading
    reference (or deleting every superuser) makes the whole truncate fail."""
    with conn:
        current = load_collection(conn, collection.id)
        if current is None:
            raise CollectionValidationError("The requested resource wasn't found.", {})
        if current.type == "view":
            raise CollectionValidationError(
                "View collections cannot be truncated since they don't store their own records.", {})
        ids = [row[0] for row in conn.execute(f"SELECT id FROM {backquote(current.name)}")]
        try:
            delete_records(conn, current, ids)
        except (RequiredReferenceError, LastSuperuserError) as err:
            raise CollectionValidationError(
                "Failed to truncate collection (most likely due to required cascade delete record references).",
                {}) from err


class RequiredReferenceError(Exception):
    """A record cannot be deleted: a required, non-cascading relation field references it."""


class LastSuperuserError(Exception):
    """The only remaining superuser cannot be deleted."""


_RequiredReference = RequiredReferenceError


def delete_records(conn: apsw.Connection, target: Collection, ids: Sequence[str]) -> None:
    """Delete records of ``target`` as PocketBase's ``Delete`` does for each of them (call it inside a
    transaction): a reference in another record is removed from its relation field (bumping its
    ``updated``); when none is left and the field has ``cascadeDelete`` that record is deleted too
    (recursively); when none is left and the field is required nothing is deleted
    (:class:`RequiredReferenceError`). The auth records' MFA/OTP/external-auth/auth-origin rows go too."""
    if target.name == "_superusers" and ids:
        total = conn.execute(f"SELECT COUNT(*) FROM {backquote(target.name)}").fetchone()[0]
        if total - len(set(ids)) < 1:
            raise LastSuperuserError("You can't delete the only existing superuser.")
    collections = load_collections(conn)
    _delete_records(conn, collections, target, ids, set())
    for start in range(0, len(ids), 500):
        chunk = list(ids[start:start + 500])
        conn.execute(f"DELETE FROM {backquote(target.name)} WHERE id IN ({', '.join('?' * len(chunk))})", chunk)


def _touch_updated(other: Collection) -> tuple[str, int]:
    """SQL assignments bumping ``other``'s onUpdate autodate fields (with their parameter), if any."""
    names = [d["name"] for d in other.fields if d.get("type") == "autodate" and d.get("onUpdate")]
    return "".join(f", {backquote(n)} = ?" for n in names), len(names)


def _delete_records(conn: apsw.Connection, collections: CollectionMap, target: Collection, ids: Sequence[str],
                    seen: set[tuple[str, str]]) -> None:
    fresh = [i for i in ids if (target.id, i) not in seen]
    if not fresh:
        return
    seen.update((target.id, i) for i in fresh)
    doomed = set(fresh)
    referencing = sorted(_references(collections, target), key=lambda pair: pair[0].name)
    for other, definition in referencing:
        if other.type == "view":
            continue
        column, table = backquote(definition["name"]), backquote(other.name)
        rows = conn.execute(f"SELECT id, {column} FROM {table} WHERE {column} != '' AND {column} != '[]'").fetchall()
        cascade: list[str] = []
        touch_sql, touch_count = _touch_updated(other)
        for raw_id, stored in rows:
            record_id = str(raw_id)
            if (other.id, record_id) in seen:
                continue  # being deleted itself
            current_ids = F.relation_ids(definition, stored)
            remaining = [i for i in current_ids if i not in doomed]
            if len(remaining) == len(current_ids):
                continue
            if definition.get("cascadeDelete") and not remaining:
                cascade.append(record_id)
                continue
            if not remaining and definition.get("required"):
                raise RequiredReferenceError(f"{other.name}.{definition['name']} of {record_id}")
            conn.execute(f"UPDATE {table} SET {column} = ?{touch_sql} WHERE id = ?",
                         (F.stored_from_list(definition, remaining), *([_now()] * touch_count), record_id))
        if cascade:
            _delete_records(conn, collections, other, cascade, seen)
            for start in range(0, len(cascade), 500):
                chunk = cascade[start:start + 500]
                conn.execute(f"DELETE FROM {table} WHERE id IN ({', '.join('?' * len(chunk))})", chunk)
    if target.type == "auth":
        _delete_auth_side_rows(conn, collections, target.id, fresh)
