"""The baselines, measured in the same run as our engine: `qemu-img convert`, `restic`
and `nbdcopy`.

They come from Debian packages (`qemu-utils`, `restic`, `libnbd-bin`), installed with
apt-get when missing (as root, unless --no-install). Each command runs as a child process; its time
is the wall time from start to exit plus a final `os.sync()` (ours is timed the same
way), and its peak RSS comes from `wait4`'s rusage of that child alone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.data import tree_file_bytes

PACKAGES = {"qemu-img": "qemu-utils", "restic": "restic", "nbdcopy": "libnbd-bin"}
# What our side of P1-NBD and P2-CBT needs (the kvm source): tools/install-system-deps.sh
# installs it, and links libnbd's Python module into the venv (`make bench` runs it).
KVM_TOOLS = ("qemu-img", "qemu-io", "qemu-nbd")
RESTIC_PASSWORD = "bench-password-not-secret"


@dataclass
class Timed:
    seconds: float
    peak_rss_mib: float
    stdout: str


def drop_caches(enabled: bool) -> bool:
    """Writes back dirty pages, then (if enabled) drops the page cache. True if dropped."""
    os.sync()
    if not enabled:
        return False
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def ensure_tools(install: bool, log) -> dict[str, str | None]:
    """Path of each baseline tool (None if absent), installing missing ones via apt-get."""
    missing = [t for t in PACKAGES if shutil.which(t) is None]
    if missing and install:
        if os.geteuid() != 0:
            log(f"baselines {missing} missing and not root: they will be skipped")
        else:
            pkgs = sorted({PACKAGES[t] for t in missing})
            log(f"installing {' '.join(pkgs)} with apt-get")
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            try:
                subprocess.run(["apt-get", "update"], check=True, env=env,
                               stdout=subprocess.DEVNULL)
                subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *pkgs],
                               check=True, env=env, stdout=subprocess.DEVNULL)
            except (OSError, subprocess.CalledProcessError) as e:
                log(f"apt-get failed ({e}): missing baselines will be skipped")
    return {t: shutil.which(t) for t in PACKAGES}


def kvm_missing() -> list[str]:
    """What the kvm source lacks here (empty when P1-NBD and P2-CBT can run)."""
    missing = [t for t in KVM_TOOLS if shutil.which(t) is None]
    try:
        import nbd  # noqa: F401
    except ImportError:
        missing.append("libnbd's Python module (nbd)")
    return missing


def versions(tools: dict[str, str | None]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name, cmd in (("qemu-img", ["qemu-img", "--version"]), ("restic", ["restic", "version"]),
                      ("nbdcopy", ["nbdcopy", "--version"])):
        if tools.get(name) is None:
            out[name] = None
            continue
        try:
            first = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            out[name] = first.splitlines()[0].strip()
        except (OSError, subprocess.CalledProcessError, IndexError):
            out[name] = "unknown"
    return out


def run_timed(cmd: list[str], *, env: dict[str, str] | None = None,
              sync: bool = True) -> Timed:
    """Runs `cmd`; its wall time (plus os.sync when `sync`) and its own peak RSS."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    # Read output while it runs (no pipe deadlock), then reap it with wait4 for rusage.
    out, err = _drain(proc)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if sync:
        os.sync()
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err.strip()[-2000:]}")
    return Timed(seconds, usage.ru_maxrss / 1024, out)


def _drain(proc: subprocess.Popen) -> tuple[str, str]:
    import threading
    chunks: dict[str, bytes] = {}

    def read(name, stream):
        chunks[name] = stream.read()
        stream.close()

    threads = [threading.Thread(target=read, args=(n, s))
               for n, s in (("out", proc.stdout), ("err", proc.stderr))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return (chunks["out"].decode(errors="replace"), chunks["err"].decode(errors="replace"))


# -- qemu-img -------------------------------------------------------------------------

def qemu_convert(src: Path, dst: Path) -> Timed:
    """`qemu-img convert -O raw SRC DST` into a new file, plus a final sync."""
    dst.unlink(missing_ok=True)
    try:
        return run_timed(["qemu-img", "convert", "-O", "raw", str(src), str(dst)])
    finally:
        dst.unlink(missing_ok=True)


# -- nbdcopy --------------------------------------------------------------------------

def nbdcopy_qcow2(image: Path, dst: Path, connections: int = 4) -> Timed:
    """`nbdcopy -- [ qemu-nbd -r -e 4 -f qcow2 IMAGE ] DST`: nbdcopy starts qemu-nbd
    (socket activation) and copies the export into a new raw file, plus a final sync.
    Starting qemu-nbd is timed, as ours times starting its own."""
    dst.unlink(missing_ok=True)
    try:
        return run_timed(["nbdcopy", "--", "[", "qemu-nbd", "-r", "-e", str(connections),
                          "-f", "qcow2", str(image), "]", str(dst)])
    finally:
        dst.unlink(missing_ok=True)


# -- restic ---------------------------------------------------------------------------

class Restic:
    """A local restic repository at `repo`, its cache next to it."""

    def __init__(self, repo: Path):
        self.repo = repo
        self.cache = repo.with_name(repo.name + "-cache")
        self.env = {**os.environ, "RESTIC_PASSWORD": RESTIC_PASSWORD,
                    "RESTIC_REPOSITORY": str(repo), "RESTIC_CACHE_DIR": str(self.cache)}
        self._flags: list[str] | None = None

    def reset(self) -> None:
        shutil.rmtree(self.repo, ignore_errors=True)
        shutil.rmtree(self.cache, ignore_errors=True)
        self.repo.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["restic", "init"], env=self.env, check=True, capture_output=True)

    def remove(self) -> None:
        shutil.rmtree(self.repo, ignore_errors=True)
        shutil.rmtree(self.cache, ignore_errors=True)

    def backup_flags(self) -> list[str]:
        """--no-scan where this restic has it (0.15+): the scan only feeds progress."""
        if self._flags is None:
            help_text = subprocess.run(["restic", "backup", "--help"], env=self.env,
                                       capture_output=True, text=True).stdout
            self._flags = ["--no-scan"] if re.search(r"--no-scan\b", help_text) else []
        return self._flags

    def stored_bytes(self) -> int:
        return tree_file_bytes(self.repo)

    def backup(self, path: Path) -> tuple[Timed, int]:
        """`restic backup PATH` (restic picks the previous snapshot of the same path as
        parent); its time and the bytes it added to the repository."""
        before = self.stored_bytes()
        t = run_timed(["restic", "backup", "--host", "bench", "--quiet", *self.backup_flags(),
                       str(path)], env=self.env)
        return t, self.stored_bytes() - before


def qemu_convert_many(pairs: list[tuple[Path, Path]]) -> Timed:
    """One `qemu-img convert -O raw` per (src, dst), all started at once, plus a final
    sync; peak RSS is the largest of them."""
    for _, dst in pairs:
        dst.unlink(missing_ok=True)
    t0 = time.perf_counter()
    procs = [subprocess.Popen(["qemu-img", "convert", "-O", "raw", str(s), str(d)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for s, d in pairs]
    peak, failed = 0.0, []
    try:
        for p in procs:
            err = p.stderr.read()
            p.stderr.close()
            _, status, usage = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            peak = max(peak, usage.ru_maxrss / 1024)
            if p.returncode != 0:
                failed.append(err.decode(errors="replace").strip())
        os.sync()
        seconds = time.perf_counter() - t0
    finally:
        for _, dst in pairs:
            dst.unlink(missing_ok=True)
    if failed:
        raise RuntimeError(f"qemu-img convert failed: {failed[0][-1000:]}")
    return Timed(seconds, peak, "")
