"""PocketBase-compatible auth tokens and password hashes.

Tokens are HS256 JWTs with PocketBase's claims (``id``, ``type``, ``collectionId``, ``refreshable``, ``exp``)
signed with the record's ``tokenKey`` followed by the collection's ``authToken.secret``, exactly as PocketBase
0.23+ signs them, so a token issued by stock PocketBase for an imported data.db verifies here and back.
Passwords are bcrypt hashes (``$2a$``/``$2b$`` both verify); a hash in the standard form is checked, and new hashes
made, natively (:func:`pbfast.primitives.bcrypt_check`, ``bcrypt_hash``: ~8 % less CPU than the ``bcrypt`` package,
whose checks made a login cost more than PocketBase's), any other hash by the ``bcrypt`` package as before. Signing, checking and splitting tokens is native
(:func:`pbfast.primitives.hs256_sign`): OpenSSL's HMAC through Python cost ~7 µs a call, on every request with a
token. Parts are read as strict unpadded base64url, as PocketBase's JWT library reads them.
"""

from __future__ import annotations

import os
import secrets
import string
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import bcrypt
import orjson

from pbfast.primitives import bcrypt_check, bcrypt_check_pair, bcrypt_hash, hs256_sign, hs256_verify, jwt_segments

__all__ = [
    "BcryptFirst",
    "BcryptJob",
    "BcryptRuns",
    "PasswordCheck",
    "PasswordHash",
    "bcrypt_in_turn",
    "bcrypt_off_turn",
    "stable_random",
    "TokenError",
    "hash_password",
    "issue_auth_token",
    "issue_token",
    "new_token_key",
    "peek_token_claims",
    "unverified_claims",
    "verify_password",
    "verify_token_signature",
]

BCRYPT_COST = 10  # PocketBase's default cost for new hashes
TOKEN_KEY_LENGTH = 50
_TOKEN_KEY_ALPHABET = string.ascii_letters + string.digits + "_"
_HEADER = b'{"alg":"HS256","typ":"JWT"}'  # the header of the tokens made here (and by PocketBase)


class TokenError(ValueError):
    """The token is malformed, expired, or its signature does not verify."""


def new_token_key() -> str:
    """A fresh per-record token key (50 random ``[a-zA-Z0-9_]`` characters, as PocketBase makes them)."""
    return "".join(secrets.choice(_TOKEN_KEY_ALPHABET) for _ in range(TOKEN_KEY_LENGTH))


def hash_password(password: str, cost: int = BCRYPT_COST) -> str:
    """A new bcrypt hash of ``password``; in a turn run under :func:`bcrypt_off_turn`, the hash made off the turn
    (else :class:`BcryptFirst` is raised to have it made)."""
    deferring = _deferring()
    if deferring is not None:
        for job in deferring.jobs:
            if isinstance(job, PasswordHash) and (job.password, job.cost) == (password, cost) and job.ran \
                    and not job.used:
                job.used = True  # each hash once (two fields with one password get two salts, as in a turn)
                if job.error is not None:
                    raise job.error
                return job.hashed
        if deferring.defer:
            raise BcryptFirst(PasswordHash(password, cost))
    return _hashpw(password, cost)


def _hashpw(password: str, cost: int) -> str:
    """A new bcrypt hash (``$2b$``), native when it can be (see the module's docs); the ``bcrypt`` package raises
    its ValueError for what the native hash does not make (a password over 72 bytes, a cost outside 4-31)."""
    encoded = password.encode()
    hashed = bcrypt_hash(encoded, cost, os.urandom(16)) if 4 <= cost <= 31 else None
    return hashed if hashed is not None else bcrypt.hashpw(encoded, bcrypt.gensalt(cost)).decode()


@dataclass(slots=True)
class PasswordCheck:
    """A password to check against a record's hash, found in one database turn and checked off it
    (:meth:`run`, see :mod:`pbfast.pocketbase.password_checks`): bcrypt takes 50-250 ms of CPU, and the tenant's other requests
    (refreshes, reads) would wait behind every queued login, as the tenant's jobs run one at a time."""

    password: str
    hashed: str
    matches: bool | None = None  # None: not checked yet

    def run(self) -> None:
        self.matches = _checkpw(self.password, self.hashed)

    def pairable(self) -> bool:
        """Whether :meth:`run_with` may take this check: the plain check (:meth:`run` not made otherwise) of a
        hash in bcrypt's standard length, which cannot fail (a password that is UTF-8, not a lone surrogate kept
        from a form value)."""
        if type(self).run is not PasswordCheck.run or len(self.hashed) != 60 or not self.hashed.startswith("$2"):
            return False
        try:
            self.password.encode()
        except UnicodeEncodeError:
            return False
        return True

    def run_with(self, other: PasswordCheck) -> None:
        """:meth:`run` of this check and ``other`` (both :meth:`pairable`) together: one thread, their rounds
        interleaved, about the CPU time of one check for both (``rust/src/bcrypt/pair.rs``); what the native
        check does not answer is checked as :meth:`run` would."""
        first, second = bcrypt_check_pair(self.password.encode(), self.hashed.encode(), other.password.encode(),
                                           other.hashed.encode())
        self.matches = first if first is not None else _checkpw(self.password, self.hashed)
        other.matches = second if second is not None else _checkpw(other.password, other.hashed)


@dataclass(slots=True)
class PasswordHash:
    """A new password's hash, made off the tenant's turn as :class:`PasswordCheck` s are."""

    password: str
    cost: int
    hashed: str = ""
    error: ValueError | None = None  # what hashing raised (PocketBase reports it as the save's error)
    ran: bool = False
    used: bool = False

    def run(self) -> None:
        try:
            self.hashed = _hashpw(self.password, self.cost)
        except ValueError as err:
            self.error = err
        self.ran = True


BcryptJob = PasswordCheck | PasswordHash


class BcryptFirst(Exception):  # noqa: N818 - not an error: a request for work before the turn runs again
    """Raised in a turn run under :func:`bcrypt_off_turn` where bcrypt would run: the caller makes ``job`` off
    the turn and runs the turn again with it (so that a handler that raises it must have written nothing that
    its transaction does not roll back)."""

    def __init__(self, job: BcryptJob) -> None:
        super().__init__(job)
        self.job = job


@dataclass(slots=True)
class BcryptRuns:
    """One request's turn, run again after bcrypt work off the turn (:class:`BcryptFirst`): the jobs made so far,
    and the random values its runs drew (a random password to hash, an OTP code), the same in every run so that
    the hash made for one run is the one the next needs."""

    jobs: list[BcryptJob] = field(default_factory=list)
    defer: bool = True  # False: work not in ``jobs`` is made in the turn after all
    _randoms: dict[str, list[str]] = field(default_factory=dict)
    _drawn: dict[str, int] = field(default_factory=dict)  # by the current run

    def random(self, label: str, make: Callable[[], str]) -> str:
        drawn = self._drawn.get(label, 0)
        values = self._randoms.setdefault(label, [])
        if drawn == len(values):
            values.append(make())
        self._drawn[label] = drawn + 1
        return values[drawn]


class _TurnContext(threading.local):
    """Per thread: the BcryptRuns of the turn running on it, None: bcrypt in it (a class default: read on every
    request's turn, found without an AttributeError raised and caught)."""

    current: BcryptRuns | None = None


_context = _TurnContext()


def _deferring() -> BcryptRuns | None:
    return _context.current


class bcrypt_off_turn:  # noqa: N801 - used as the function it was: ``with bcrypt_off_turn(runs):``
    """Within (one run of a request's turn): :func:`hash_password` and :func:`verify_password` use the jobs made
    off the turn for the request's earlier runs, else raise :class:`BcryptFirst` (or, ``runs.defer`` False, run
    bcrypt in place); ``runs`` None: bcrypt runs in place. (A class, not a generator: it wraps every request's
    turn, and a ``contextmanager`` costs a generator and four calls more.)"""

    __slots__ = ("_outer", "_runs")

    def __init__(self, runs: BcryptRuns | None) -> None:
        self._runs = runs
        self._outer: BcryptRuns | None = None

    def __enter__(self) -> None:
        runs = self._runs
        self._outer = _context.current
        if runs is not None:
            runs._drawn.clear()
            for job in runs.jobs:  # each run uses the hashes made so far afresh (a run that used one did not commit)
                if isinstance(job, PasswordHash):
                    job.used = False
        _context.current = runs

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, trace: object) -> None:
        _context.current = self._outer


@contextmanager
def bcrypt_in_turn() -> Iterator[None]:
    """Within: bcrypt runs in place (after a write that a run again would not find as it was)."""
    with bcrypt_off_turn(None):
        yield


def stable_random(label: str, make: Callable[[], str]) -> str:
    """``make()``, or within :func:`bcrypt_off_turn` the value the request's earlier runs drew at this point."""
    runs = _deferring()
    return make() if runs is None else runs.random(label, make)


def verify_password(password: str, hashed: str, checked: PasswordCheck | None = None) -> bool:
    """Check ``password`` against a bcrypt hash; False (never an exception) for a malformed hash. ``checked``:
    the answer of a check made off the turn, used when it was made for the same password and hash (as are the
    checks made for an earlier run of the request under :func:`bcrypt_off_turn`, else :class:`BcryptFirst`)."""
    if checked is not None and checked.matches is not None and (checked.password, checked.hashed) == (password, hashed):
        return checked.matches
    if not hashed:
        return False
    deferring = _deferring()
    if deferring is not None:
        for job in deferring.jobs:
            if isinstance(job, PasswordCheck) and job.matches is not None \
                    and (job.password, job.hashed) == (password, hashed):
                return job.matches
        if deferring.defer:
            raise BcryptFirst(PasswordCheck(password, hashed))
    return _checkpw(password, hashed)


def _checkpw(password: str, hashed: str) -> bool:
    if not hashed:
        return False
    password_bytes, hashed_bytes = password.encode(), hashed.encode()
    matches = bcrypt_check(password_bytes, hashed_bytes)
    if matches is not None:
        return matches
    try:  # not the standard form, or a password over 72 bytes: the bcrypt package's answer, as it always was
        return bcrypt.checkpw(password_bytes, hashed_bytes)
    except ValueError:
        return False


def issue_token(claims: dict[str, Any], signing_key: str, duration: int, now: float | None = None) -> str:
    """An HS256 JWT of ``claims`` plus ``exp`` (``duration`` seconds from now), keys sorted as Go marshals
    PocketBase's claim maps."""
    payload = {**claims, "exp": int((time.time() if now is None else now) + duration)}
    return hs256_sign(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS), signing_key.encode())


def issue_auth_token(record_id: str, token_key: str, collection_id: str, secret: str, duration: int,
                     refreshable: bool = True, now: float | None = None) -> str:
    """A PocketBase auth token for one record, valid ``duration`` seconds."""
    claims = {"collectionId": collection_id, "id": record_id, "refreshable": refreshable, "type": "auth"}
    return issue_token(claims, token_key + secret, duration, now)


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT as it reads, expired or not, signature unchecked ({} when it is not one);
    PocketBase reads claims such as ``email`` this way before it verifies the token."""
    segments = _segments(token)
    if segments is None:
        return {}
    try:
        claims = orjson.loads(segments[1])
    except orjson.JSONDecodeError:
        return {}
    return claims if isinstance(claims, dict) else {}


def issue_file_token(record_id: str, token_key: str, collection_id: str, secret: str, duration: int,
                     now: float | None = None) -> str:
    """A PocketBase file token (type ``file``) for one auth record, valid ``duration`` seconds."""
    claims = {"collectionId": collection_id, "exp": int((time.time() if now is None else now) + duration),
              "id": record_id, "type": "file"}
    return hs256_sign(orjson.dumps(claims), (token_key + secret).encode())


def peek_token_claims(token: str) -> dict[str, Any]:
    """The claims of a well-formed, unexpired HS256 token, WITHOUT checking its signature.

    Use them only to find the record and collection whose keys verify it (:func:`verify_token_signature`).
    """
    segments = _segments(token)
    if segments is None:
        raise TokenError("malformed token")
    try:
        header = {"alg": "HS256"} if segments[0] == _HEADER else orjson.loads(segments[0])
        claims = orjson.loads(segments[1])
    except orjson.JSONDecodeError as err:
        raise TokenError("malformed token") from err
    if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
        raise TokenError("unsupported token")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool) or exp <= time.time():
        raise TokenError("expired token")
    for name in ("id", "collectionId", "type"):
        if not isinstance(claims.get(name), str):
            raise TokenError(f"token without {name}")
    return claims


def verify_token_signature(token: str, token_key: str, secret: str) -> bool:
    try:
        return hs256_verify(token, (token_key + secret).encode())
    except UnicodeEncodeError:  # a lone surrogate (invalid UTF-8 kept from a form value): not a token
        return False


def _segments(token: str) -> tuple[bytes, bytes] | None:
    try:
        return jwt_segments(token)
    except UnicodeEncodeError:  # a lone surrogate (invalid UTF-8 kept from a form value) cannot cross into Rust
        return None
