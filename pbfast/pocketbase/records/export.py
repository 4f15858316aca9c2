"""A stored row as PocketBase's record JSON, for a given viewer (PocketBase's ``Record.PublicExport``)."""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pbfast.pocketbase.fields import Field, GeoPointField, PasswordField
from pbfast.pocketbase.fields.autodate import AutodateField
from pbfast.pocketbase.fields.date import DateField
from pbfast.pocketbase.fields.multi import MultiValueField
from pbfast.pocketbase.fields.plain import PlainTextField
from pbfast.pocketbase.fields.text import TextField
from pbfast.pocketbase.gocompat.datetimes import CANONICAL_DATETIME
from pbfast.pocketbase.collections import Collection

if TYPE_CHECKING:
    from pbfast.pocketbase.records.expand import ExpandedRecord, Expansion

__all__ = ["Viewer", "expansion_json", "record_json", "strip_hidden"]


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking at a record: decides hidden fields and email visibility."""

    superuser: bool = False
    auth_collection_id: str = ""
    auth_record_id: str = ""


def record_json(collection: Collection, row: dict[str, Any], viewer: Viewer, *,
                show_email: bool = False) -> dict[str, Any]:
    """A stored row as PocketBase's record JSON (``collectionId``, ``collectionName``, then the fields).

    Hidden fields only for superusers (an auth record's ``password`` and ``tokenKey`` never); an auth record's
    ``email`` only when ``emailVisibility`` is on, for superusers, for the record itself (PocketBase matches
    the requester by id), or when ``show_email`` (the requester manages the record through the collection's
    ``manageRule``)."""
    out: dict[str, Any] = {"collectionId": collection.id, "collectionName": collection.name}
    superuser = viewer.superuser
    for name, to_api, kept in _shown_fields(collection, superuser):
        value = row.get(name)
        if kept is not None and type(value) is str and (kept is True or kept(value)):
            out[name] = value  # what to_api would give back: no call per field
        else:
            out[name] = to_api(value)
    if collection.type != "auth":
        return out
    if "email" in out and not (
            show_email or viewer.superuser or (viewer.auth_record_id and viewer.auth_record_id == row.get("id"))
            or row.get("emailVisibility")):
        out.pop("email")
    return out


def _password_to_api(stored: object) -> str:
    return ""


def _shown_value(field: Field) -> Callable[[Any], object]:
    """How a field's stored value shows in a record's JSON: a password field as "" wherever it is visible
    (only its hash is stored), a geoPoint as PocketBase's struct (``lon`` first), others as their API value."""
    if isinstance(field, PasswordField):
        return _password_to_api
    if isinstance(field, GeoPointField):
        return field.to_record_json
    return field.to_api


# When a stored str shows as itself (see _kept_str): always, or when this holds for it.
KeptStr = Literal[True] | Callable[[str], object] | None
ShownField = tuple[str, Callable[[Any], object], KeptStr]


def _kept_str(field: Field) -> KeptStr:
    """When the field's API value of a stored str is that str, so :func:`record_json` need not call its
    ``to_api``: a text field's always (``to_api`` is ``typed``, which gives a str back as it is), a date's when
    it is already in PocketBase's layout (what :func:`stored_datetime_text` gives back unchanged); None: never.
    Decided by the methods the field's class has, so a subclass that shows its values otherwise is called."""
    kind = type(field)
    if kind.to_api is Field.to_api and kind.typed in (TextField.typed, PlainTextField.typed):
        return True
    if kind.to_api in (AutodateField.to_api, DateField.to_api):
        return CANONICAL_DATETIME.fullmatch
    if kind.to_api is MultiValueField.to_api and kind.typed is MultiValueField.typed and not field.is_multiple():
        return _single_value  # a single relation, select or file: its one stored id, value or name
    return None


def _single_value(stored: str) -> bool:
    """Whether a single-value field's stored str shows as itself (``MultiValueField.to_api``: a str without
    ``[`` is the one value, ``""`` none)."""
    return "[" not in stored


def _shown_fields(collection: Collection, superuser: bool) -> list[ShownField]:
    """What :func:`record_json` shows of a collection, to a superuser or not: each shown field's name, how
    its stored value is shown (a password field as "": only its hash is stored; an auth record's ``password``
    and ``tokenKey`` never) and when a stored str shows as itself (:func:`_kept_str`), worked out once per
    collection (a collection is never changed once loaded: an update loads a new one)."""
    known = _shown.get(id(collection))
    if known is not None and known[0] is collection:
        return known[1][superuser]
    never = ("password", "tokenKey") if collection.type == "auth" else ()
    plans: tuple[list[ShownField], ...] = tuple(
        [(field.name, _shown_value(field), _kept_str(field))
         for field in collection.fields if (not field.hidden or for_superuser) and field.name not in never]
        for for_superuser in (False, True))
    if len(_shown) >= _SHOWN_KEPT:
        _shown.clear()
    _shown[id(collection)] = (collection, plans)  # the collection held: its id is not reused meanwhile
    return plans[superuser]


_SHOWN_KEPT = 1024
_shown: dict[int, tuple[Collection, tuple[list[ShownField], ...]]] = {}


def expansion_json(expands: list[Expansion | None], viewer: Viewer) -> list[dict[str, Any] | None]:
    """Records' ``expand`` as the answer shows it (None where no path reached the record): each expanded
    record as :func:`record_json` for the viewer (its email shown when the viewer manages it), with its own
    ``expand`` when a path reached it. A record expanded under several parents is built once."""
    built: dict[int, dict[str, Any]] = {}

    def export(value: Expansion) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, related in value.items():
            out[key] = [one(node) for node in related] if isinstance(related, list) else one(related)
        return out

    def one(node: ExpandedRecord) -> dict[str, Any]:
        data = built.get(id(node))
        if data is None:
            data = record_json(node.collection, node.row, viewer, show_email=node.show_email)
            if node.expand is not None:
                data["expand"] = export(node.expand)
            built[id(node)] = data
        return data

    return [None if expand is None else export(expand) for expand in expands]


def strip_hidden(collection: Collection, data: dict[str, Any]) -> dict[str, Any]:
    """Non-superusers cannot set hidden fields (an auth collection's ``password`` excepted)."""
    known = _hidden.get(id(collection))
    if known is not None and known[0] is collection:
        hidden = known[1]
    else:  # worked out once per loaded collection, as _shown_fields
        hidden = frozenset(f.name for f in collection.fields
                           if f.hidden and not (collection.type == "auth" and f.name == "password"))
        if len(_hidden) >= _SHOWN_KEPT:
            _hidden.clear()
        _hidden[id(collection)] = (collection, hidden)
    return {k: v for k, v in data.items() if k not in hidden} if hidden else data


_hidden: dict[int, tuple[Collection, frozenset[str]]] = {}
