"""Run the same request sequence against stock PocketBase and a pbfast tenant and compare the answers.

Normalised before comparing, and only where the two must differ: auth tokens, ids generated during the
sequence (mapped to ``<new-N>`` in order of appearance), the names PocketBase gave files uploaded during the
sequence (``name_<10 random>.ext``, mapped to ``<file-N>``; steps may use both kinds of placeholder, in raw
bodies too), and timestamps written during the sequence
(``created``/``updated`` of records and collections saved by a step: any date between the start of the run
and a minute from now), the random ``_clone_xxxx`` ids of the fields a view collection copies, the random
name (and id) of the throwaway view a view query's dry run reads through, and the random suffix of the index
names in the scaffolds of a collection that has no name yet, and the SQL console's ``execTime`` (milliseconds:
a number on both sides, its value is the machine's).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from pbharness import Backend

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}Z$")
_JWT = re.compile(r"^eyJ[\w-]+\.[\w-]+\.[\w-]+$")
# Values PocketBase generates at random from a field's autogeneratePattern (e.g. users' "users123456").
_GENERATED_USERNAME = re.compile(r"^users\d{5,6}$")
# Ids PocketBase gives the fields a view collection copies from another collection ("_clone_" + 4 random).
_CLONE_FIELD_ID = re.compile(r"^_clone_[A-Za-z0-9]{4}$")
# A stored upload's name: the sanitised original name, "_", 10 random lowercase letters or digits, the extension
# (the fixture's own files have upper-case letters in their random part, so they never match).
_UPLOADED_FILE_NAME = re.compile(r"^[a-z0-9_]*_[a-z0-9]{10}(\.[A-Za-z0-9]+)*$")
# The throwaway view a view query's dry run reads through ("temp_view_" + 5 random), named in its messages.
_TEMP_VIEW = re.compile(r"\btemp_view_[A-Za-z0-9]{5}\b")
# The index names the scaffolds of a collection without a name or an id end with (10 random characters).
_UNNAMED_INDEX = re.compile(r"`idx_(\w+?)_[a-z0-9]{10}` ON ``")
# An uploaded file's name quoted in a validation message.
_QUOTED_UPLOAD = re.compile(r'"[a-z0-9_]*_[a-z0-9]{10}(\.[A-Za-z0-9]+)*"')


@dataclass(frozen=True)
class Step:
    """One request. ``auth``: None (guest), "superuser", or "as:<step name>" (the token a step returned)."""

    name: str
    method: str
    path: str
    body: Any = None
    auth: str | None = "superuser"
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # PocketBase writes this answer's top-level object as a Go map in random order (the scaffolds).
    random_key_order: bool = False
    # ... or its "data" object (the health check's details for a superuser).
    random_data_order: bool = False


@dataclass
class Outcome:
    status: int
    body: Any


class Runner:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.tokens: dict[str, str] = {}
        self.new_ids: dict[str, str] = {}
        self.fixture_ids: set[str] = set()
        # One client for the sequence: a client of its own per request costs ~25 ms of CPU (its TLS context).
        self.client = httpx.Client()
        # Dates from this moment on were written by the sequence (the fixture's are years old).
        self.started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() - 2))
        # One client for the whole sequence (a client per request costs ~30 ms of CPU: its TLS context), with a
        # new connection per request as before (keep-alive off).
        self.client = httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0))

    def run(self, step: Step) -> Outcome:
        headers = dict(step.headers)
        if step.auth == "superuser":
            headers["Authorization"] = self.backend.superuser_token
        elif step.auth and step.auth.startswith("as:"):
            headers["Authorization"] = self.tokens[step.auth[3:]]
        path = step.path
        for placeholder, real in self.new_ids.items():
            path = path.replace(placeholder, real)
        kwargs: dict[str, Any] = {"headers": headers}
        if step.raw is not None:
            raw = step.raw
            for placeholder, real in self.new_ids.items():
                raw = raw.replace(placeholder.encode(), real.encode())
            kwargs["content"] = raw
            headers.setdefault("content-type", "application/json")
        elif step.body is not None:
            kwargs["json"] = self._with_new_ids(step.body)
        response = self.client.request(step.method, self.backend.url + path, **kwargs)
        body: Any = None
        if response.content:
            try:
                body = response.json()
            except ValueError:
                body = response.text
        if isinstance(body, dict) and isinstance(body.get("token"), str):
            self.tokens[step.name] = body["token"]
        return Outcome(response.status_code, self._normalise(body))

    def _with_new_ids(self, value: Any) -> Any:
        """``value`` with the ``<new-N>`` placeholders in its strings replaced by the real ids."""
        if isinstance(value, dict):
            return {k: self._with_new_ids(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._with_new_ids(v) for v in value]
        if isinstance(value, str):
            for placeholder, real in self.new_ids.items():
                value = value.replace(placeholder, real)
        return value

    def _normalise(self, value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            written = isinstance(value.get("id"), str) and value["id"] in self.new_ids.values()
            out = {}
            for k, v in value.items():
                if k == "id" and isinstance(v, str) and "collectionName" in value:
                    out[k] = self._id(v)
                elif written and k in ("created", "updated") and isinstance(v, str) and _DATE.match(v):
                    out[k] = "<date>"
                elif written and k == "username" and isinstance(v, str) and _GENERATED_USERNAME.match(v):
                    out[k] = "<generated>"
                elif k == "id" and isinstance(v, str) and _CLONE_FIELD_ID.match(v):
                    out[k] = "_clone_<random>"
                elif k == "collectionId" and isinstance(value.get("collectionName"), str) \
                        and _TEMP_VIEW.fullmatch(value["collectionName"]):
                    out[k] = "<the throwaway view's id>"
                elif k == "execTime" and isinstance(v, int | float) and not isinstance(v, bool):
                    out[k] = "<milliseconds>"
                elif k == "message" and isinstance(v, str):
                    out[k] = _TEMP_VIEW.sub("temp_view_<random>", _QUOTED_UPLOAD.sub('"<uploaded file>"', v))
                else:
                    out[k] = self._normalise(v, k)
            return out
        if isinstance(value, list):
            return [self._normalise(v, key) for v in value]
        if isinstance(value, str):
            value = _UNNAMED_INDEX.sub(r"`idx_\1_<random>` ON ``", _TEMP_VIEW.sub("temp_view_<random>", value))
            if _JWT.match(value):
                return "<token>"
            if _DATE.match(value) and self.started <= value <= _moments_from_now(60):
                return "<date>"
            if value in self.new_ids.values():
                return next(p for p, real in self.new_ids.items() if real == value)
        return value

    def _id(self, record_id: str) -> str:
        if record_id in self.fixture_ids:
            return record_id
        for placeholder, real in self.new_ids.items():
            if real == record_id:
                return placeholder
        return record_id

    def remember_new_id(self, record_id: str) -> None:
        if record_id not in self.new_ids.values():
            count = sum(1 for placeholder in self.new_ids if placeholder.startswith("<new-"))
            self.new_ids[f"<new-{count + 1}>"] = record_id

    def remember_new_file(self, name: str) -> None:
        if name not in self.new_ids.values():
            count = sum(1 for placeholder in self.new_ids if placeholder.startswith("<file-"))
            self.new_ids[f"<file-{count + 1}>"] = name


def _moments_from_now(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(time.time() + seconds))


def compare(stock: Backend, pbfast: Backend, steps: list[Step], fixture_ids: set[str], *,
            key_order: bool = False) -> list[str]:
    """Run ``steps`` on both; returns one line per difference (empty when all equal). ``key_order``: the
    keys of every object must also come in PocketBase's order (as a client reading the raw text sees them),
    except in answers trimmed by ``fields`` (PocketBase 0.40 writes those in Go's random map order)."""
    runners = Runner(stock), Runner(pbfast)
    for runner in runners:
        runner.fixture_ids = fixture_ids
    try:
        return _compare(runners, steps, key_order)
    finally:
        for runner in runners:
            runner.client.close()


def _compare(runners: tuple[Runner, Runner], steps: list[Step], key_order: bool = False) -> list[str]:
    differences: list[str] = []
    try:
        return _compare_steps(runners, steps, differences, key_order)
    finally:
        for runner in runners:
            runner.client.close()


def _compare_steps(runners: tuple[Runner, Runner], steps: list[Step], differences: list[str],
                   key_order: bool = False) -> list[str]:
    for step in steps:
        outcomes = []
        for runner in runners:
            outcome = runner.run(step)
            raw_ids = _created_ids(outcome, runner)
            raw_files = _uploaded_files(outcome.body, runner.fixture_ids) if outcome.status == 200 else []
            if raw_ids or raw_files:
                for raw_id in raw_ids:
                    runner.remember_new_id(raw_id)
                for name in raw_files:
                    runner.remember_new_file(name)
                outcome = Outcome(outcome.status, runner._normalise(outcome.body))
            outcomes.append(outcome)
        expected, actual = outcomes
        if (expected.status, expected.body) != (actual.status, actual.body):
            differences.append(f"{step.name}: {step.method} {step.path}\n  pocketbase: {expected.status} "
                               f"{expected.body}\n  pbfast:     {actual.status} {actual.body}")
        elif key_order and not _trimmed_by_fields(step) and _step_keys(step, expected.body) \
                != _step_keys(step, actual.body):
            differences.append(f"{step.name}: {step.method} {step.path}: keys in another order\n  pocketbase: "
                               f"{_keys(expected.body)}\n  pbfast:     {_keys(actual.body)}")
    return differences


def _trimmed_by_fields(step: Step) -> bool:
    """Whether the answer (or a batch item's) was trimmed by a ``fields`` query parameter."""
    return "fields=" in step.path or "fields=" in repr(step.body) or b"fields=" in (step.raw or b"")


def _step_keys(step: Step, body: Any) -> list[Any]:
    """:func:`_keys` of a step's answer, the parts PocketBase writes in random order sorted."""
    if step.random_data_order and isinstance(body, dict) and isinstance(body.get("data"), dict):
        body = {**body, "data": dict(sorted(body["data"].items()))}
    return _keys(body, step.random_key_order)


def _keys(value: Any, sort_top: bool = False) -> list[Any]:
    """The keys of every object in ``value``, in order, depth first (``sort_top``: the top level's sorted)."""
    found: list[Any] = []
    if isinstance(value, dict):
        found.append(sorted(value) if sort_top else list(value))
        for _, item in sorted(value.items()) if sort_top else value.items():
            found += _keys(item)
    elif isinstance(value, list):
        for item in value:
            found += _keys(item)
    return found


def _created_ids(outcome: Outcome, runner: Runner) -> list[str]:
    """Ids the step made: an MFA session it opened, or records that are not the fixture's, anywhere in a
    200 answer (a created record, a batch's results, expanded records), in order of appearance."""
    body = outcome.body
    if outcome.status == 401 and isinstance(body, dict) and isinstance(body.get("mfaId"), str) \
            and not body["mfaId"].startswith("<new-"):
        return [body["mfaId"]]  # an MFA session opened by the step
    if outcome.status == 200 and isinstance(body, dict) and set(body) == {"otpId"} and isinstance(body["otpId"], str) \
            and not body["otpId"].startswith("<new-"):
        return [body["otpId"]]  # a one-time password requested by the step (or the decoy id for an unknown email)
    found: list[str] = []
    if outcome.status == 200:
        _record_ids(body, runner.fixture_ids, found)
    return found


def _record_ids(value: Any, fixture_ids: set[str], found: list[str]) -> None:
    if isinstance(value, dict):
        record_id = value.get("id")
        if isinstance(record_id, str) and "collectionName" in value and record_id not in fixture_ids \
                and not record_id.startswith("<new-") and record_id not in found:
            found.append(record_id)
        for item in value.values():
            _record_ids(item, fixture_ids, found)
    elif isinstance(value, list):
        for item in value:
            _record_ids(item, fixture_ids, found)


def _uploaded_files(value: Any, known: set[str], found: list[str] | None = None) -> list[str]:
    """Names of uploaded files in the records of an answer (values of a record's fields, not ids nor
    ``known`` values such as the fixture's collection ids), in order of appearance."""
    found = [] if found is None else found
    if isinstance(value, dict):
        for key, item in sorted(value.items()):  # the same order whatever order the keys came in
            if "collectionName" in value and key not in ("id", "collectionId", "collectionName"):
                for name in item if isinstance(item, list) else [item]:
                    if isinstance(name, str) and _UPLOADED_FILE_NAME.match(name) and name not in known \
                            and name not in found:
                        found.append(name)
            _uploaded_files(item, known, found)
    elif isinstance(value, list):
        for item in value:
            _uploaded_files(item, known, found)
    return found
