"""Restore destination `kvm`: a point's disk written as a qcow2 image in a kvm site's
directory, for a QEMU VM of the recovery site to boot (dr_control/recovery/kvm.py).

It is what `drctl restore --format qcow2` makes, made the same way, through the same
code (dr_common/targets/image.py): the disk is written as a sparse raw file next to the
image (zero chunks left as holes), then `convert_to_qcow2` has qemu-img convert it (zeros
skipped, so the image stays sparse) beside the destination and renames it into place,
so a VM is never started on a half-written image. Before the raw file is removed,
`qemu-img compare` checks that the image reads back as exactly those bytes, and
restore_to (restores/__init__.py) checks sampled chunks of the raw file against their
ids: together, the qcow2 holds the point's disk. The node needs room for the raw file
too while the disk is written (twice the disk's allocated size at most).

The path must be inside the node's file roots, like every file a node writes; the
site's directory is on a host the node reaches (the same host, or a shared mount).
A failed restore removes the raw file and the image.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import structlog

from dr_common.errors import AlreadyExists, InvalidArgument, TargetError
from dr_common.paths import check_within_roots
from dr_common.targets.base import TargetEnv
from dr_common.targets.image import convert_to_qcow2, pwrite_all

log = structlog.get_logger()

IMAGE_SUFFIX = ".qcow2"


def _image_size(path: Path) -> int:
    """The image's virtual size, as QEMU sees it."""
    done = subprocess.run(["qemu-img", "info", "--output", "json", str(path)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise TargetError(f"qemu-img info {path} failed: {done.stderr.strip()}",
                          reason="restore-verify-failed", retryable=True)
    return int(json.loads(done.stdout)["virtual-size"])


def _compare(raw: Path, image: Path) -> None:
    """qemu-img compare: the qcow2 reads as the raw file's bytes, every one of them
    (exit 1: they differ, 2+: it could not tell)."""
    done = subprocess.run(["qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow2",
                           str(raw), str(image)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise TargetError(f"{image} does not read back as the restored disk "
                          f"(qemu-img compare: exit {done.returncode} "
                          f"{done.stderr.strip()}); retry the restore",
                          reason="restore-verify-failed", retryable=True)


class Qcow2Writer:
    """One disk written front to back into a sparse raw file, made a qcow2 at finish."""

    volume_id = ""

    def __init__(self, image: Path, size: int, overwrite: bool, env: TargetEnv):
        self.image = image
        self.name = str(image)
        self.size = size
        self.overwrite = overwrite
        self.executor = env.executor
        # Hidden and unique, like convert_to_qcow2's own partial file: a crashed
        # attempt's leftover is never mistaken for an image.
        self.raw = image.parent / f".{image.name}.raw-{uuid.uuid4().hex[:8]}"
        self.fd = -1
        self.offset = 0

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def open(self) -> None:
        def make() -> int:
            self.image.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.raw, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            os.ftruncate(fd, self.size)
            return fd
        self.fd = await self._run(make)

    async def write(self, data: bytes | memoryview) -> None:
        await self._run(pwrite_all, self.fd, bytes(data), self.offset)
        self.offset += len(data)

    async def zeros(self, length: int) -> None:
        # The raw file was sized up front: a range never written is a hole, read as zeros.
        self.offset += length

    async def finish(self) -> int:
        def done() -> int:
            os.fsync(self.fd)
            convert_to_qcow2(self.raw, self.image, self.overwrite)
            _compare(self.raw, self.image)
            return _image_size(self.image)
        return await self._run(done)

    async def read(self, offset: int, length: int) -> bytes:
        # The raw file, which qemu-img compare found identical to the image.
        return await self._run(os.pread, self.fd, length, offset)

    async def abort(self) -> None:
        await self._run(self.image.unlink, True)
        log.info("restore to kvm image aborted: removed", image=self.name)

    async def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.raw.unlink(missing_ok=True)


async def open_writer(dest: Any, site: Any, *, size: int, env: TargetEnv) -> Qcow2Writer:
    """`dest`: a KvmImage; `site`: unused (a kvm site's settings are its path, which
    `dest.path` is under)."""
    if not dest.path.endswith(IMAGE_SUFFIX) or not os.path.isabs(dest.path):
        raise InvalidArgument(f"the kvm image to restore to must be an absolute path "
                              f"ending in {IMAGE_SUFFIX}, got {dest.path!r}",
                              field="destination.kvm.path")
    image = check_within_roots(dest.path, env.roots, field="destination.kvm.path")
    if image.exists() and not dest.overwrite:
        raise AlreadyExists(f"{image} exists; pass overwrite to replace it")
    writer = Qcow2Writer(image, size, dest.overwrite, env)
    try:
        await writer.open()
    except BaseException:
        await writer.close()
        raise
    return writer
