"""The ``fields`` query parameter (PocketBase's ``tools/picker``): which keys of a JSON answer to keep, and
the ``:excerpt`` modifier."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any, Final, Protocol

from pbfast.pocketbase.dbutils.tokenizer import UnbalancedTokenError, split_tokens
from pbfast.pocketbase.gocompat import cast_to_int, parse_bool
from pbfast.pocketbase.search.errors import QueryParamError
from pbfast.pocketbase.search.excerpt import excerpt

__all__ = ["ExcerptModifier", "FieldsSpec", "Modifier", "apply_fields", "apply_fields_many", "parse_fields"]

class Modifier(Protocol):
    """A ``field:modifier(args)`` value transformation."""

    def modify(self, value: Any) -> Any:
        """The modified value."""
        ...


FieldsSpec = dict[str, "Modifier | None"]
"""Parsed ``fields``: dotted path -> modifier (or ``None``)."""


@dataclass(frozen=True, slots=True)
class ExcerptModifier:
    """``:excerpt(max, withEllipsis?)``: HTML -> collapsed plain text of at most ``max`` characters."""

    max: int
    with_ellipsis: bool = False

    @staticmethod
    def from_args(args: Sequence[str]) -> ExcerptModifier:
        """Validate the raw arguments like PocketBase.

        Raises:
            QueryParamError: no/too many arguments or ``max <= 0``.
        """
        if not args:
            raise QueryParamError("max argument is required - expected (max, withEllipsis?)")
        if len(args) > 2:
            raise QueryParamError("too many arguments - expected (max, withEllipsis?)")
        max_length = cast_to_int(args[0])
        if max_length <= 0:
            raise QueryParamError("max argument must be > 0")
        with_ellipsis = bool(parse_bool(args[1])) if len(args) > 1 else False
        return ExcerptModifier(max_length, with_ellipsis)

    def modify(self, value: Any) -> Any:
        """The excerpt of a string value (other values are returned unchanged)."""
        if not isinstance(value, str):
            return value
        return excerpt(value, self.max, self.with_ellipsis)


_MODIFIER_FACTORIES: Final = {"excerpt": ExcerptModifier.from_args}


def _init_modifier(raw: str) -> Modifier:
    try:
        parts = split_tokens(raw, "(), ", ignore_parenthesis=True)
    except UnbalancedTokenError as exc:
        raise QueryParamError(str(exc)) from exc
    if not parts:
        raise QueryParamError(f"invalid or empty modifier expression {raw!r}")
    factory = _MODIFIER_FACTORIES.get(parts[0])
    if factory is None:
        raise QueryParamError(f"missing or invalid modifier {parts[0]!r}")
    return factory(parts[1:])


def parse_fields(expression: str) -> FieldsSpec:
    """Parse a ``fields`` parameter such as ``id,title,expand.rel.name,*,description:excerpt(200,true)``.

    Raises:
        QueryParamError: unbalanced quotes/parentheses, an unknown modifier or invalid modifier arguments
            (PocketBase: 400).
    """
    try:
        tokens = split_tokens(expression, ",")
    except UnbalancedTokenError as exc:
        raise QueryParamError(str(exc)) from exc
    spec: FieldsSpec = {}
    for token in tokens:
        name, sep, modifier = token.strip().partition(":")
        spec[name] = _init_modifier(modifier) if sep else None
    return spec


def apply_fields(record: Mapping[str, Any], spec: FieldsSpec | str) -> dict[str, Any]:
    """A copy of a JSON-ready record holding only the picked fields (modifiers applied).

    Nested paths (``expand.rel.name``) descend into objects and into lists of objects; ``*`` keeps every
    top-level key not otherwise listed. An empty spec keeps everything.
    """
    fields = dict(parse_fields(spec) if isinstance(spec, str) else spec)
    picked = _pick(dict(record), fields)
    assert isinstance(picked, dict)
    return picked


def apply_fields_many(records: Sequence[Mapping[str, Any]], spec: FieldsSpec | str) -> list[dict[str, Any]]:
    """:func:`apply_fields` for the items of a list response (one shared spec, like PocketBase)."""
    fields = dict(parse_fields(spec) if isinstance(spec, str) else spec)
    return [_pick_map(dict(r), fields) for r in records]


def _pick(data: Any, fields: FieldsSpec) -> Any:
    if is_dataclass(data) and not isinstance(data, type):
        data = asdict(data)  # a struct in a record's JSON (a geoPoint), picked into as the object it shows as
    if isinstance(data, Mapping):
        return _pick_map(data, fields)
    if isinstance(data, list):
        if not data or not isinstance(data[0], Mapping):
            return data
        return [_pick_map(item, fields) if isinstance(item, Mapping) else item for item in data]
    return data


def _pick_map(data: Mapping[str, Any], fields: FieldsSpec) -> dict[str, Any]:
    if not fields:
        return dict(data)
    if "*" in fields:
        star = fields["*"]
        for key in data:
            if not any((f + ".").startswith(key + ".") for f in fields):
                fields[key] = star
    result: dict[str, Any] = {}
    for key, value in data.items():
        prefix = key + "."
        matching = {f: m for f, m in fields.items() if (f + ".").startswith(prefix)}
        if not matching:
            continue
        nested: FieldsSpec = {}
        for f, modifier in matching.items():
            remains = (f + ".").removeprefix(prefix).removesuffix(".")
            if remains == "":
                result[key] = modifier.modify(value) if modifier is not None else value
                break
            nested[remains] = modifier
        else:
            result[key] = _pick(value, nested)
    return result
