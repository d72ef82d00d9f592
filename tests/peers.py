"""Finding the real peers and tools tests need. Under CI=true a missing one is a
failure, not a skip (the test suite must have installed it)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Services of proto/ that dr-node serves, not dr-control: target nodes' TransferService.
NODE_SERVICES = frozenset({"dr.v1.TransferService"})


def require_tool(name: str, *, npm: bool = False) -> str:
    path = ROOT / "node_modules" / ".bin" / name if npm else shutil.which(name)
    if path and Path(path).exists():
        return str(path)
    how = "run `make test`, which installs it" + (" with npm ci" if npm else "")
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} is missing: {how}")
    pytest.skip(f"{name} is missing: {how}")
