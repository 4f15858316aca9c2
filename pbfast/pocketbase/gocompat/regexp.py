"""RE2-like matching of field patterns and ``security.RandomStringByRegex`` (through Python's private
``re._parser``).

Pure functions (caches are thread-safe; the buffer of random bytes has its lock): safe from any thread.
"""

from __future__ import annotations

import functools
import os
import re
import re._constants as sre_constants  # type: ignore[import-not-found]
import re._parser as sre_parse  # type: ignore[import-not-found]
import secrets
import string
import threading
from typing import Any, Final


@functools.lru_cache(maxsize=512)
def _compiled_regex(pattern: str) -> re.Pattern[str]:
    """A field pattern compiled with Go RE2-like semantics for ASCII classes (``\\w``, ``\\d``, ``\\s``)."""
    return re.compile(pattern, re.ASCII)


def regex_error(pattern: str) -> str | None:
    """None if ``pattern`` compiles, else the compile error text."""
    try:
        _compiled_regex(pattern)
    except (re.error, RecursionError, OverflowError) as err:
        return f"error parsing regexp: {err}"
    return None


def regex_search(pattern: str, value: str) -> bool:
    """``regexp.MatchString(pattern, value)`` - an unanchored search; an invalid pattern never matches."""
    try:
        return _compiled_regex(pattern).search(value) is not None
    except (re.error, RecursionError, OverflowError):
        return False


_CATEGORY_CHARS: Final = {
    sre_constants.CATEGORY_DIGIT: string.digits,
    sre_constants.CATEGORY_NOT_DIGIT: string.ascii_letters + "_-",
    sre_constants.CATEGORY_WORD: string.ascii_letters + string.digits + "_",
    sre_constants.CATEGORY_NOT_WORD: " -.,;:!?",
    sre_constants.CATEGORY_SPACE: " ",
    sre_constants.CATEGORY_NOT_SPACE: string.ascii_letters + string.digits,
}
_PRINTABLE: Final = string.ascii_letters + string.digits + string.punctuation + " "
_UNBOUNDED_EXTRA: Final = 10


def _charset(items: list[tuple[Any, Any]]) -> str:
    negate = False
    chars: list[str] = []
    for op, arg in items:
        if op is sre_constants.NEGATE:
            negate = True
        elif op is sre_constants.LITERAL:
            chars.append(chr(arg))
        elif op is sre_constants.RANGE:
            low, high = arg
            chars.extend(chr(c) for c in range(low, min(high, low + 4096) + 1))
        elif op is sre_constants.CATEGORY:
            chars.extend(_CATEGORY_CHARS.get(arg, ""))
    if negate:
        excluded = set(chars)
        chars = [c for c in _PRINTABLE if c not in excluded]
    return "".join(dict.fromkeys(chars))


def _generate(parsed: Any, out: list[str]) -> None:
    for op, arg in parsed:
        if op is sre_constants.LITERAL:
            out.append(chr(arg))
        elif op is sre_constants.NOT_LITERAL:
            out.append(secrets.choice([c for c in _PRINTABLE if c != chr(arg)]))
        elif op is sre_constants.ANY:
            out.append(secrets.choice(string.ascii_letters + string.digits))
        elif op is sre_constants.IN:
            pool = _charset(arg)
            if not pool:
                raise ValueError("empty character class")
            out.append(secrets.choice(pool))
        elif op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, getattr(sre_constants, "POSSESSIVE_REPEAT", None)):
            low, high, sub = arg
            if high is sre_constants.MAXREPEAT or high > low + _UNBOUNDED_EXTRA:
                high = low + _UNBOUNDED_EXTRA if high is sre_constants.MAXREPEAT else high
            count = low + secrets.randbelow(high - low + 1)
            for _ in range(count):
                _generate(sub, out)
        elif op is sre_constants.SUBPATTERN:
            _generate(arg[-1], out)
        elif op is getattr(sre_constants, "ATOMIC_GROUP", None):
            _generate(arg, out)
        elif op is sre_constants.BRANCH:
            _generate(secrets.choice(arg[1]), out)
        elif op is sre_constants.AT:
            continue
        else:
            raise ValueError(f"unsupported regex construct {op}")


_RANDOM_CHUNK = 4096
_random_buffer = bytearray()  # bytes of os.urandom not handed out yet
_random_lock = threading.Lock()
os.register_at_fork(after_in_child=_random_buffer.clear)  # a forked worker must not repeat its parent's draws


def _random_bytes(count: int) -> bytes:
    """``count`` bytes of ``os.urandom``, drawn :data:`_RANDOM_CHUNK` at a time (a system call per record id
    cost more than the rest of making it); each byte goes to one caller, on any thread."""
    with _random_lock:
        if len(_random_buffer) < count:
            _random_buffer.extend(os.urandom(max(_RANDOM_CHUNK, count)))
        out = bytes(_random_buffer[-count:])
        del _random_buffer[-count:]
    return out


@functools.lru_cache(maxsize=64)
def _byte_map(pool: str) -> tuple[bytes, bytes] | None:
    """For an ASCII ``pool``: a ``bytes.translate`` table mapping a random byte to ``pool[byte % len(pool)]``,
    and the bytes to drop (at or above the largest multiple of the pool's size: they would bias the draw)."""
    if not pool.isascii():
        return None
    limit = 256 - 256 % len(pool)
    table = bytes(ord(pool[byte % len(pool)]) if byte < limit else 0 for byte in range(256))
    return table, bytes(range(limit, 256))


def _random_from_pool(pool: str, count: int) -> str:
    """``count`` characters drawn uniformly from ``pool`` (rejection sampling of random bytes)."""
    size = len(pool)
    if size == 1:
        return pool * count
    byte_map = _byte_map(pool)
    if byte_map is not None:  # in C: map the bytes through a table, dropping the biased ones
        table, biased = byte_map
        drawn = b""
        while len(drawn) < count:
            drawn += _random_bytes(count + count // 4 + 4).translate(table, biased)
        return drawn[:count].decode("ascii")
    limit = 256 - 256 % size  # bytes at or above this would bias the draw
    out: list[str] = []
    while len(out) < count:
        for byte in secrets.token_bytes(count * 2):
            if byte < limit:
                out.append(pool[byte % size])
                if len(out) == count:
                    break
    return "".join(out)


@functools.lru_cache(maxsize=512)
def _parsed_pattern(pattern: str) -> Any:
    try:
        return sre_parse.parse(pattern)
    except re.error as err:
        raise ValueError(f"invalid autogenerate pattern {pattern!r}: {err}") from err


@functools.lru_cache(maxsize=512)
def _fixed_pool_plan(pattern: str) -> tuple[tuple[str, int], ...] | None:
    """For patterns made only of literals and fixed-count character classes (``[a-z0-9]{15}``,
    ``users[0-9]{6}``): ``((pool, count), ...)``; None for anything else."""
    plan: list[tuple[str, int]] = []
    for op, arg in _parsed_pattern(pattern):
        if op is sre_constants.LITERAL:
            plan.append((chr(arg), 1))
        elif op is sre_constants.IN:
            plan.append((_charset(arg), 1))
        elif op is sre_constants.MAX_REPEAT and arg[0] == arg[1] and len(arg[2]) == 1 \
                and arg[2][0][0] is sre_constants.IN:
            plan.append((_charset(arg[2][0][1]), int(arg[0])))
        else:
            return None
    if any(not pool for pool, _ in plan):
        return None
    return tuple(plan)


def generate_by_pattern(pattern: str) -> str:
    """A random string matching ``pattern`` (PocketBase's ``security.RandomStringByRegex``), e.g. for
    ``[a-z0-9]{15}`` or ``users[0-9]{5}``. Unbounded repeats produce at most 10 extra items."""
    plan = _fixed_pool_plan(pattern)
    if plan is not None:  # the common case (record ids, usernames): one urandom call per class
        if len(plan) == 1:  # a record id's [a-z0-9]{15}: no generator and join around the one draw
            return _random_from_pool(*plan[0])
        return "".join(_random_from_pool(pool, count) for pool, count in plan)
    out: list[str] = []
    _generate(_parsed_pattern(pattern), out)
    return "".join(out)
