"""qcow2 test images for the kvm scenarios (P1-NBD, P2-CBT), made and changed with
QEMU's own tools so that persistent dirty bitmaps see every write.

An image is random data throughout: a raw image from `bench.data` (seeded BLAKE3
stream) converted with `qemu-img convert -O qcow2` (faster here than writing the qcow2
through qemu-io or qemu-nbd), then the raw file is removed. Scattered writes go through
`qemu-io`, one `write -s FILE OFF 64k` per offset, each from its own file of fresh
random data (a `-P` fill pattern would make every write identical, and identical chunks
deduplicate): writing the qcow2 file directly would bypass the bitmaps.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from bench import data
from bench.data import WRITE_SIZE, file_hash


def _run(args: list[str], what: str, *, quiet: bool = False, **kw) -> str:
    """Runs a qemu tool. `quiet`: it prints nothing when all went well (qemu-io -q
    exits 0 after a failed -c command, and only its output says so)."""
    done = subprocess.run(args, capture_output=True, text=True, **kw)
    if done.returncode != 0 or (quiet and (done.stdout.strip() or done.stderr.strip())):
        raise RuntimeError(f"{what} failed ({done.returncode}): "
                           f"{(done.stderr or done.stdout).strip()[-2000:]}")
    return done.stdout


def make_qcow2(path: Path, size: int, seed: str) -> Path:
    """A qcow2 image of `size` bytes of seed's random data, every cluster allocated.
    Reused when a clean one made by the same recipe exists (see bench.data)."""
    recipe = {"size": size, "seed": seed, "format": "qcow2"}
    sidecar = path.with_name(path.name + ".json")
    try:
        if json.loads(sidecar.read_text()) == {**recipe, "state": "clean"} and path.is_file():
            return path
    except (OSError, ValueError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    sidecar.write_text(json.dumps({**recipe, "state": "building"}, sort_keys=True))
    raw = path.with_name(path.name + ".raw")
    try:
        data.make_image(raw, size, seed)
        path.unlink(missing_ok=True)
        _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(path)],
             f"qemu-img convert {raw} -> qcow2")
    finally:
        raw.unlink(missing_ok=True)
        raw.with_name(raw.name + ".json").unlink(missing_ok=True)
    sidecar.write_text(json.dumps({**recipe, "state": "clean"}, sort_keys=True))
    return path


def _set_state(path: Path, state: str) -> None:
    sidecar = path.with_name(path.name + ".json")
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return
    sidecar.write_text(json.dumps({**meta, "state": state}, sort_keys=True))


def mark_dirty(path: Path) -> None:
    """The image is about to change: a later run must not reuse it as made."""
    _set_state(path, "dirty")


def mark_clean(path: Path) -> None:
    """The image holds its original content again (its changes were written back)."""
    _set_state(path, "clean")


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".json").unlink(missing_ok=True)


# Writes per qemu-io invocation: bounds its command line and the scratch files.
_BATCH = 2048


def scattered_writes(image: Path, offsets: list[int], seed: str, scratch: Path,
                     write_size: int = WRITE_SIZE) -> int:
    """Writes `write_size` bytes of seed's stream at each offset (fresh random data,
    distinct per offset) with qemu-io, `write -s FILE OFF LEN` per offset, the data of
    each in its own scratch file. Returns the bytes written."""
    mark_dirty(image)
    size = f"{write_size // 1024}k"
    for first in range(0, len(offsets), _BATCH):
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        try:
            commands = []
            for i, off in enumerate(offsets[first:first + _BATCH]):
                (scratch / f"w{i}").write_bytes(data.stream(seed, off, write_size))
                commands += ["-c", f"write -q -s w{i} {off} {size}"]
            _run(["qemu-io", "-f", "qcow2", *commands, str(image.resolve())],
                 f"qemu-io writes to {image}", quiet=True, cwd=scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return len(offsets) * write_size


def guest_hash(image: Path, scratch: Path) -> str:
    """BLAKE3 of the image's guest-visible content (as `qemu-img convert -O raw`)."""
    out = scratch / (image.name + ".content.raw")
    out.unlink(missing_ok=True)
    try:
        _run(["qemu-img", "convert", "-O", "raw", str(image), str(out)],
             f"qemu-img convert {image} -> raw")
        return file_hash(out)
    finally:
        out.unlink(missing_ok=True)


def remove_bitmaps(image: Path, prefix: str) -> None:
    """Removes the persistent bitmaps whose names start with `prefix`."""
    info = json.loads(_run(["qemu-img", "info", "--force-share", "--output=json",
                            str(image)], f"qemu-img info {image}"))
    for b in info.get("format-specific", {}).get("data", {}).get("bitmaps", []):
        if b["name"].startswith(prefix):
            _run(["qemu-img", "bitmap", "--remove", str(image), b["name"]],
                 f"removing bitmap {b['name']}")


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512
