"""Finding the programs tests need, and what a missing peer means: under CI=true a
failure, not a skip (the test suite must have installed it)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

from tests.helpers import ROOT
from tools.localcluster import free_port  # noqa: F401  (one free-port helper for every peer)


def unavailable(message: str) -> NoReturn:
    """Ends the test: a peer or tool it needs is missing (`message` says how to get it)."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def require_tool(name: str, *, npm: bool = False) -> str:
    path = ROOT / "node_modules" / ".bin" / name if npm else shutil.which(name)
    if path and Path(path).exists():
        return str(path)
    how = "run `make test`, which installs it" + (" with npm ci" if npm else "")
    unavailable(f"{name} is missing: {how}")


def require_qemu() -> None:
    """What reading kvm disks needs: qemu-img, qemu-io, qemu-nbd and libnbd's binding."""
    for tool in ("qemu-img", "qemu-io", "qemu-nbd"):
        require_tool(tool)
    if importlib.util.find_spec("nbd") is None:
        unavailable("python3-libnbd (the nbd module) is missing: run `make test`, which "
                    "installs it")


def stop_process(process: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """Stops a peer's process: terminate, and kill if it has not exited within `timeout`."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
