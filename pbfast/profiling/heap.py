"""Heap profiles: the Python memory in use, by allocating stack (tracemalloc) or by type (the collector).

tracemalloc is far too slow to leave on in a server: measured on an all-in-one under load, tracing one frame
per allocation served 6x fewer requests, sixteen frames 22x fewer (profiling/README.md). So nothing is
traced by default, and a heap profile is one of:

- **by allocating stack, since start**, when tracing was started with the interpreter
  (``PYTHONTRACEMALLOC=16 pbfast serve ...``): every live traced block;
- **by allocating stack, over a window** (``?seconds=N``): tracing runs for N seconds only, then the blocks
  allocated in the window and still alive are reported (what grows; Go's ``seconds`` delta profile);
- **by type, now** (otherwise): every object reachable from the modules and the collector's objects, by
  type, each counted once with ``sys.getsizeof``. A walk of the heap (0.2 s on an idle all-in-one) that
  costs nothing until asked.

Memory SQLite and the Rust extension allocate themselves is in none of them; the profile's comments give
SQLite's total.

tracemalloc knows files and line numbers only; function names come from compiling each file that appears
(once per file, cached) and mapping every line to the innermost function that holds it.
"""

from __future__ import annotations

import gc
import linecache
import os
import sys
import tracemalloc
from dataclasses import dataclass, field
from types import CodeType, FrameType

from pbfast.profiling.pprof import FrameInfo, ProfileBuilder, ValueType

__all__ = ["WINDOW_TRACE_FRAMES", "TracingWindow", "census_profile", "traced_profile"]

WINDOW_TRACE_FRAMES = 8  # frames per allocation in a window: deeper stacks cost more (see the module doc)

_SPACE = ValueType("space", "bytes")
_INUSE_TYPES = [ValueType("inuse_objects", "count"), ValueType("inuse_space", "bytes")]


class TracingWindow:
    """Tracing started for one window (:meth:`begin` / :meth:`end`); tracing already on when the window
    began (``PYTHONTRACEMALLOC``) is left on."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._started_here = False

    def begin(self, frames: int = WINDOW_TRACE_FRAMES) -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(frames)
            self._started_here = True

    def end(self) -> None:
        if self._started_here:
            tracemalloc.stop()
            self._started_here = False


@dataclass(slots=True)
class _FunctionNames:
    """Maps ``(file, line)`` to the function holding that line, compiling each file once."""

    _lines: dict[str, dict[int, tuple[str, int]]] = field(default_factory=dict)

    def of(self, filename: str, line: int, modules: dict[str, str]) -> FrameInfo:
        if line == 0 and filename == "<unknown>":  # allocated where no Python code ran (a native thread)
            return FrameInfo("[no Python frame]", "", "", 0, 0)
        lines = self._lines.get(filename)
        if lines is None:
            lines = self._lines[filename] = _function_lines(filename)
        module = modules.get(filename, "")
        found = lines.get(line)
        if found is None:
            name = f"{os.path.basename(filename)}:{line}"
            return FrameInfo(f"{module}.{name}" if module else name, name, filename, 0, line)
        qualname, first_line = found
        return FrameInfo(f"{module}.{qualname}" if module else qualname, qualname, filename, first_line, line)


def _function_lines(filename: str) -> dict[int, tuple[str, int]]:
    """Line -> (qualified name, first line) of the innermost function (or class body, or ``<module>``)."""
    source = "".join(linecache.getlines(filename))
    if not source:
        return {}
    try:
        module_code = compile(source, filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return {}
    lines: dict[int, tuple[str, int]] = {}
    pending: list[CodeType] = [module_code]
    while pending:  # outer code first, so that inner functions' lines overwrite it
        code = pending.pop(0)
        for _, _, line in code.co_lines():
            if line is not None:
                lines[line] = (code.co_qualname, code.co_firstlineno)
        pending += [const for const in code.co_consts if isinstance(const, CodeType)]
    return lines


_NAMES = _FunctionNames()


def _module_files() -> dict[str, str]:
    files = {}
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str):
            files[path] = name
    return files


def traced_profile(collect_first: bool = False, window: TracingWindow | None = None) -> ProfileBuilder:
    """The live traced blocks by allocating stack (``inuse_objects/count``, ``inuse_space/bytes``).
    tracemalloc must be tracing; a ``window`` ends right after the snapshot, before the (slow) naming.
    Blocks for a while: call it off the event loop."""
    if collect_first:
        gc.collect()
    snapshot = tracemalloc.take_snapshot()
    traced, peak = tracemalloc.get_traced_memory()
    summary = (f"{tracemalloc.get_traceback_limit()} frames per allocation; {traced} bytes traced now (peak "
               f"{peak}), tracemalloc's own memory {tracemalloc.get_tracemalloc_memory()} bytes")
    if window is not None:
        window.end()
    builder = ProfileBuilder(_INUSE_TYPES, period_type=_SPACE, period=1, default_sample_type="inuse_space")
    scope = "since tracing started" if window is None else f"in the last {window.seconds:g} s"
    builder.comments += [f"tracemalloc: blocks allocated {scope} and still alive, {summary}",
                         *_native_memory_comments()]
    snapshot = snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    modules = _module_files()
    for statistic in snapshot.statistics("traceback"):
        frames = [_NAMES.of(frame.filename, frame.lineno, modules) for frame in reversed(statistic.traceback)]
        builder.add(frames, [statistic.count, statistic.size])
    return builder


def _unheld_types() -> frozenset[type]:
    """Objects the census counts where it finds them but never holds on to while it walks on (other threads
    go on running meanwhile, and an object the census holds outlives its last other reference): a frame
    object kept past its function's return keeps that function's and its callers' locals alive, and an apsw
    cursor or blob kept alive keeps its tenant's read transaction open, which makes the tenant's writes fail
    with "database is locked"."""
    kinds: set[type] = {FrameType}
    apsw = sys.modules.get("apsw")
    if apsw is not None:
        kinds |= {apsw.Cursor, apsw.Blob}
    return frozenset(kinds)


def census_profile(collect_first: bool = False) -> ProfileBuilder:
    """Every object reachable from the loaded modules and the collector's tracked objects, by type (one
    frame per sample: the type), each counted once with ``sys.getsizeof``.

    The roots matter: the server freezes its start-up objects (``gc.freeze``) and the collector lists no
    frozen object, so most long-lived objects are found only through the modules that hold them. Blocks for
    a while (a walk of the whole heap: 0.2 s for the ~130k objects of an idle all-in-one): call it off the
    event loop."""
    if collect_first:
        gc.collect()
    unheld = _unheld_types()
    totals: dict[type, list[int]] = {}

    def tally(item: object) -> None:
        counts = totals.get(type(item))
        if counts is None:
            counts = totals[type(item)] = [0, 0]
        counts[0] += 1
        counts[1] += sys.getsizeof(item, 0)

    roots: list[object] = []
    for candidate in gc.get_objects():
        if type(candidate) in unheld:
            tally(candidate)
        else:
            roots.append(candidate)
    roots += list(sys.modules.values())
    pending: list[object] = []
    seen = {id(totals), id(roots), id(pending)}
    seen.add(id(seen))
    for root in roots:
        if id(root) in seen:
            continue
        seen.add(id(root))
        pending.append(root)
        while pending:
            item = pending.pop()
            tally(item)
            for referent in gc.get_referents(item):
                if id(referent) not in seen:
                    seen.add(id(referent))
                    if type(referent) in unheld:
                        tally(referent)
                    else:
                        pending.append(referent)
    del roots, pending  # let go of everything before the slow part
    builder = ProfileBuilder(_INUSE_TYPES, period_type=_SPACE, period=1, default_sample_type="inuse_space")
    objects = sum(count for count, _ in totals.values())
    builder.comments += [
        f"live objects by type: {objects} reachable from the modules and the collector's objects; sizes "
        "from sys.getsizeof (an object's own memory, not what it refers to); by allocating stack instead: "
        "?seconds=N",
        *_native_memory_comments(),
    ]
    for kind, (count, size) in totals.items():
        name = f"{kind.__module__}.{kind.__qualname__}"
        builder.add([FrameInfo(name, kind.__qualname__, "", 0, 0)], [count, size])
    return builder


def _native_memory_comments() -> list[str]:
    apsw = sys.modules.get("apsw")  # loaded by nodes only
    if apsw is None:
        return []
    return [f"SQLite (not traced): {apsw.memory_used()} bytes in use, high water {apsw.memory_high_water()}"]
