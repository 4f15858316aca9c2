"""Which external tools a benchmark needs (wrk, nginx, pocketbase), and what to do when one is missing."""

import os
import shutil

import pytest

__all__ = ["needs_tools"]


def needs_tools(*names: str) -> pytest.MarkDecorator:
    """Skip a benchmark whose external tools are missing on a developer's machine; under CI (``CI`` set,
    where ``.ci/run`` installs them) never skip: a missing tool must fail loudly."""
    missing = [name for name in names if shutil.which(name) is None and not os.path.exists(f"/usr/sbin/{name}")]
    return pytest.mark.skipif(bool(missing) and not os.environ.get("CI"),
                              reason=f"needs {', '.join(missing)} (installed by .ci/run)")
