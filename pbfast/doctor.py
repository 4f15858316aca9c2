"""``pbfast doctor``: what a mode needs from this installation and whether it is there.

One line per requirement (``ok`` or ``MISSING``, what was found and where), then a verdict; exit status 0
when everything the mode needs is there, 1 otherwise. Meant for operators checking a virtualenv, a
container image or a systemd unit's environment before ``pbfast serve``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pbfast.binaries import LITESTREAM, MissingBinary, find_binary
from pbfast.config import Mode

__all__ = ["Check", "Finding", "run_doctor"]

EXIT_MISSING = 1
VERSION_TIMEOUT_SECONDS = 10.0
ALL_MODES = frozenset(Mode)
NODE_MODES = frozenset({Mode.ALL_IN_ONE, Mode.TENANT_NODE})


class Missing(Exception):  # noqa: N818 - reads as "missing: <what>"
    """A requirement is not met; the message says what and how to fix it."""


@dataclass(frozen=True, slots=True)
class Check:
    """One requirement: its name, the modes that need it, and a probe returning what it found."""

    name: str
    needed_by: frozenset[Mode]
    probe: Callable[[], str]


@dataclass(frozen=True, slots=True)
class Finding:
    name: str
    ok: bool
    detail: str


def _module(name: str, distribution: str | None = None) -> Callable[[], str]:
    def probe() -> str:
        try:
            module = importlib.import_module(name)
        except ImportError as err:
            raise Missing(f"cannot import {name}: {err}") from None
        try:
            version = importlib.metadata.version(distribution or name)
        except importlib.metadata.PackageNotFoundError:
            version = str(getattr(module, "__version__", "?"))
        return f"{version} ({Path(str(getattr(module, '__file__', '?'))).parent})"
    return probe


def _native() -> str:
    try:
        native = importlib.import_module("pbfast._native")
    except ImportError as err:
        raise Missing(f"the Rust extension does not load: {err}") from None
    return f"{native.__version__} ({native.__file__})"


def _sqlite() -> str:
    try:
        apsw = importlib.import_module("apsw")
    except ImportError as err:
        raise Missing(f"cannot import apsw: {err}") from None
    return f"apsw {apsw.apsw_version()}, SQLite {apsw.sqlite_lib_version()}"


def _litestream() -> str:
    try:
        path = find_binary(LITESTREAM)
    except MissingBinary as err:
        raise Missing(str(err)) from None
    try:
        ran = subprocess.run([str(path), "version"], capture_output=True, timeout=VERSION_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise Missing(f"{path} does not run: {err}") from None
    if ran.returncode != 0:
        raise Missing(f"{path} version exited with {ran.returncode}: {ran.stderr.decode(errors='replace')[-200:]}")
    return f"{ran.stdout.decode(errors='replace').strip()} ({path})"


CHECKS = (
    Check("python", ALL_MODES, lambda: f"{sys.version.split()[0]} ({sys.executable})"),
    Check("native extension", ALL_MODES, _native),
    Check("granian", ALL_MODES, _module("granian")),
    Check("uvloop", ALL_MODES, _module("uvloop")),
    Check("sqlite", NODE_MODES, _sqlite),
    Check("litestream", NODE_MODES, _litestream),
)


def diagnose(mode: Mode | None) -> list[Finding]:
    """Every check ``mode`` needs (all of them when None)."""
    findings = []
    for check in CHECKS:
        if mode is not None and mode not in check.needed_by:
            continue
        try:
            findings.append(Finding(check.name, True, check.probe()))
        except Missing as err:
            findings.append(Finding(check.name, False, str(err)))
    return findings


def run_doctor(mode: Mode | None, out: Callable[[str], None] = print) -> int:
    """Print the findings for ``mode`` (None: every mode's needs); 0 when all are met, else 1."""
    findings = diagnose(mode)
    width = max(len(f.name) for f in findings)
    for finding in findings:
        out(f"{'ok' if finding.ok else 'MISSING':<8} {finding.name:<{width}}  {finding.detail}")
    what = f"{mode.value} mode" if mode is not None else "every mode"
    missing = [f.name for f in findings if not f.ok]
    if missing:
        out(f"{what} cannot run here: missing {', '.join(missing)}")
        return EXIT_MISSING
    out(f"everything {what} needs is here")
    return 0
