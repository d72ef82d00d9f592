"""qemu-img and qemu-nbd as processes: image facts, persistent dirty bitmaps, and
read-only NBD exports of an image (with a bitmap) on a private unix socket.

Everything here blocks (it waits for processes): callers run it in a worker thread.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from dr_common.errors import SourceError

# qemu-nbd is up when a client can connect; it takes well under a second here.
_EXPORT_START_SECONDS = 15.0


def _run(args: list[str], what: str) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise SourceError(f"{args[0]} is not installed: install Debian's qemu-utils",
                          retryable=False) from None
    if done.returncode != 0:
        raise SourceError(f"{what} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def image_info(path: str | os.PathLike) -> dict:
    """`qemu-img info` as a dict (virtual-size, format, format-specific.data.bitmaps)."""
    # --force-share: reading facts must not fail because a running VM holds the image.
    out = _run(["qemu-img", "info", "--force-share", "--output=json", os.fspath(path)],
               f"reading image {path}")
    return json.loads(out)


def bitmaps(info: dict) -> dict[str, dict]:
    """The image's persistent dirty bitmaps by name ({name, granularity, flags})."""
    data = info.get("format-specific", {}).get("data", {})
    return {b["name"]: b for b in data.get("bitmaps", [])}


def add_bitmap(path: str | os.PathLike, name: str) -> None:
    _run(["qemu-img", "bitmap", "--add", os.fspath(path), name],
         f"adding dirty bitmap {name} to {path}")


def add_full_bitmap(path: str | os.PathLike, name: str, size: int) -> None:
    """Adds a disabled bitmap with every granule of `size` bytes dirty.

    qemu-img cannot set bits itself, so they are made on a scratch image: zero writes
    over it mark its enabled bitmap dirty and, in qcow2, only write metadata (with 2 MiB
    clusters a 1 TiB scratch takes ~0.1 s and 20 MB); the scratch bitmap is then merged
    into the new, disabled one, which no later write changes."""
    with tempfile.TemporaryDirectory(prefix="dr-bitmap-") as scratch_dir:
        scratch = str(Path(scratch_dir) / "scratch.qcow2")
        _run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", scratch,
              str(size)], f"creating a scratch image for bitmap {name}")
        _run(["qemu-img", "bitmap", "--add", scratch, "all"],
             f"adding a bitmap to the scratch image for {name}")
        # -n: never fall back to writing zero buffers (it would write `size` bytes).
        _run(["qemu-io", "-f", "qcow2", "-c", f"write -q -z -n 0 {size}", scratch],
             f"marking the scratch bitmap for {name} dirty")
        _run(["qemu-img", "bitmap", "--add", "--disable", os.fspath(path), name],
             f"adding dirty bitmap {name} to {path}")
        _run(["qemu-img", "bitmap", "--merge", "all", "-b", scratch, "-F", "qcow2",
              os.fspath(path), name], f"filling dirty bitmap {name} of {path}")


def remove_bitmap(path: str | os.PathLike, name: str) -> None:
    _run(["qemu-img", "bitmap", "--remove", os.fspath(path), name],
         f"removing dirty bitmap {name} from {path}")


def untrusted_reason(bitmap_info: dict | None, *, previous_size: int, size: int) -> str:
    """Why the previous point's bitmap cannot tell what changed since that point, or ""
    if it can. Pure, for every way of reading bitmaps.

    `bitmap_info`: the bitmap added at the previous point, as `qemu-img info` shows it
    ({name, granularity, flags}), None if the image has none of that name. (qcow2 keeps
    no creation time: the name, unique per cycle and recorded by the point, says when it
    was added.) A QMP caller maps query-block's `recording` to flag "auto" and
    `inconsistent` to "inconsistent" (a running QEMU's bitmaps are in use by design).
    `previous_size`: the disk's size at the previous point, 0 if unknown; `size`: now.
    This cannot see a shrink and grow back to the same size: see `KvmDisk`'s sentinel.
    """
    if bitmap_info is None:
        return "bitmap-missing"  # removed, or the image was replaced
    flags = set(bitmap_info.get("flags", []))
    if flags & {"in-use", "inconsistent"}:
        return "bitmap-inconsistent"  # QEMU died with it open: it may have missed writes
    if "auto" not in flags:
        return "bitmap-disabled"  # not recording: writes since were not tracked
    if previous_size and previous_size != size:
        return "disk-resized"  # a grown range reads clean; a shrunk one was dropped
    return ""


def qmp_flags(bitmap: dict | None) -> dict | None:
    """A bitmap as QMP shows it (recording, inconsistent) in qemu-img's terms (flags)."""
    if bitmap is None:
        return None
    return {**bitmap, "flags": (["auto"] if bitmap.get("recording") else [])
            + (["inconsistent"] if bitmap.get("inconsistent") else [])}


class NbdExport:
    """A read-only qemu-nbd export of one image, optionally with a dirty bitmap.

    `-t` keeps it up between clients, `-e N` accepts N at once (one per reading thread),
    `-A` exposes qemu:allocation-depth. The socket lives in a private temporary
    directory; `close()` stops the server and removes it.
    """

    def __init__(self, image: str | os.PathLike, *, fmt: str, bitmap: str | None,
                 connections: int):
        self.image = os.fspath(image)
        self._dir = tempfile.mkdtemp(prefix="dr-nbd-")
        self.socket = str(Path(self._dir) / "nbd.sock")
        self._log = open(Path(self._dir) / "qemu-nbd.log", "w+")
        args = ["qemu-nbd", "--read-only", "--persistent", "--shared", str(connections),
                "--allocation-depth", "--socket", self.socket, "--format", fmt]
        if bitmap:
            args += ["--bitmap", bitmap]
        try:
            self.process = subprocess.Popen([*args, self.image], stdout=self._log,
                                            stderr=subprocess.STDOUT)
        except FileNotFoundError:
            self._cleanup()
            raise SourceError("qemu-nbd is not installed: install Debian's qemu-utils",
                              retryable=False) from None
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _EXPORT_START_SECONDS
        while True:
            if self.process.poll() is not None:
                raise SourceError(f"qemu-nbd could not export {self.image}: {self.log()}")
            if os.path.exists(self.socket):
                with socket.socket(socket.AF_UNIX) as probe:
                    try:
                        probe.connect(self.socket)
                        return
                    except OSError:
                        pass
            if time.monotonic() > deadline:
                raise SourceError(f"qemu-nbd did not start exporting {self.image} within "
                                  f"{_EXPORT_START_SECONDS:.0f}s: {self.log()}")
            time.sleep(0.01)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read().strip()[-2000:] or f"exit status {self.process.returncode}"

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)
