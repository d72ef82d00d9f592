"""Building vcsim (vcsim/main.go over Debian's govmomi 0.24.2 simulator) once per machine:
the binary is cached under .venv/vsphere-peer/vcsim-<hash of main.go>, and a file lock keeps
parallel test sessions from building it twice. Standard library only."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "vcsim" / "main.go"
GOVMOMI = Path("/usr/share/gocode/src/github.com/vmware/govmomi/simulator")
CACHE = Path(__file__).resolve().parents[3] / ".venv" / "vsphere-peer"
HOW = "run `make test`, which installs golang-go and golang-github-vmware-govmomi-dev"


class BuildError(RuntimeError):
    pass


def vcsim_binary(cache: Path = CACHE) -> Path:
    """The path of a built vcsim; builds it when this source has not been built yet."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    binary = cache / f"vcsim-{digest}"
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        raise BuildError(f"Go is missing: {HOW}")
    if not GOVMOMI.is_dir():
        raise BuildError(f"govmomi's simulator source ({GOVMOMI}) is missing: {HOW}")
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.exists():  # another session built it while this one waited
            return binary
        gopath = cache / "gopath"
        env = {**os.environ, "GO111MODULE": "off", "GOFLAGS": "",
               "GOPATH": f"{gopath}:/usr/share/gocode", "GOCACHE": str(cache / "gocache")}
        tmp = binary.with_suffix(".tmp")
        result = subprocess.run([go, "build", "-o", str(tmp), "."], cwd=SOURCE.parent, env=env,
                                capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise BuildError(f"building vcsim failed ({HOW}):\n{result.stderr[-4000:]}")
        tmp.rename(binary)
    return binary
