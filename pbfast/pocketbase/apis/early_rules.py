"""Whether a record create's (update's) API rule refuses the request for certain, decided on the event loop without
the tenant's database, so that a refused multipart write costs no early upload (its write, fsyncs and delete:
:mod:`pbfast.pocketbase.apis.early_uploads`). Decided only where the database cannot change the answer:

- a null rule: only superusers may write. A token that claims a superuser may (its signature and record are
  checked in the turn); anyone else is refused.
- a rule whose identifiers are only request values known before the turn (``@request.headers.*``,
  ``@request.method``, ``@request.query.*``, ``@request.context``; ``@request.auth.*`` only for a guest for
  certain: no token, or one that cannot be valid) and constants: compiled as the turn compiles it and evaluated
  on a private in-memory SQLite connection (where it names nothing but bound values). A token that claims a
  superuser skips it, as superusers skip rules.

Anything else (the record's fields, the body, ``@collection``, functions, a token whose record's fields the rule
reads) is not decided here: the early write goes ahead and the turn checks the rule. Either way the turn answers,
so what a client sees does not change: a refused request is answered by the in-turn path, as PocketBase answers.

Thread-safety: any thread (the in-memory connection is one per thread; the shapes' cache is locked by lru_cache).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from typing import Final

import apsw

from pbfast.pocketbase.apis.request import SUPERUSERS, TenantRequest, claimed_auth, request_info
from pbfast.pocketbase.collections import Collection
from pbfast.pocketbase.records import RuleError, compile_rule
from pbfast.pocketbase.search import ExprGroup, FilterError, TableResolver, parse
from pbfast.pocketbase.search.scanner import T_IDENTIFIER, T_NUMBER, T_TEXT, Token

__all__ = ["refused_before_turn"]

_REQUEST_VALUES: Final = ("@request.headers.", "@request.query.")
_REQUEST_NAMES: Final = frozenset({"@request.method", "@request.context"})
_AUTH: Final = "@request.auth."
_CONSTANTS: Final = frozenset({"null", "true", "false"})

_local = threading.local()


def refused_before_turn(request: TenantRequest, collection: Collection, rule: str | None) -> bool:
    """Whether ``rule`` (the collection's create or update rule) refuses this request whoever turns out to be
    asking (see the module doc); False: not known before the turn."""
    claimed = claimed_auth(request.tenant, request.header("authorization"))
    if claimed is not None and claimed[1].name == SUPERUSERS:
        return False  # superusers skip rules, and a null rule is theirs
    if rule is None:
        return True
    if rule == "":
        return False
    decidable, names_auth = _shape(rule)
    if not decidable or (names_auth and claimed is not None):  # an auth record's fields are read in the turn
        return False
    return not _holds(request, collection, rule)


@functools.lru_cache(maxsize=256)
def _shape(rule: str) -> tuple[bool, bool]:
    """Whether ``rule`` names only request values known before the turn and constants, and whether it names
    ``@request.auth.*``."""
    try:
        groups = parse(rule)
    except FilterError:
        return False, False  # the turn answers it
    names_auth = False
    for token in _operands(groups):
        if token.type in (T_TEXT, T_NUMBER):
            continue
        if token.type != T_IDENTIFIER:
            return False, False  # a function
        name = token.literal
        if name.startswith(_AUTH):
            names_auth = True
        elif not (name in _CONSTANTS or name.split(":", 1)[0] in _REQUEST_NAMES or name.startswith(_REQUEST_VALUES)):
            return False, False
    return True, names_auth


def _operands(groups: tuple[ExprGroup, ...]) -> Iterator[Token]:
    for group in groups:
        if isinstance(group.item, tuple):
            yield from _operands(group.item)
        else:
            yield group.item.left
            yield group.item.right


def _holds(request: TenantRequest, collection: Collection, rule: str) -> bool:
    """The rule for a guest (its auth is never read here: :func:`_shape` let through no token's auth fields),
    compiled as the turn compiles it; True when it cannot be evaluated here (the turn decides)."""
    resolver = TableResolver(collection, request_info(request, None, auth_state=None),
                             collections=request.tenant.collections, allow_hidden_fields=True)
    try:
        sql, params = compile_rule(rule, resolver)
        return _connection().execute(f"SELECT 1 WHERE ({sql})", params).fetchone() is not None
    except (RuleError, apsw.Error):
        return True


def _connection() -> apsw.Connection:
    connection: apsw.Connection | None = getattr(_local, "connection", None)
    if connection is None:
        connection = _local.connection = apsw.Connection(":memory:")
    return connection
