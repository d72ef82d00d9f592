"""Disk images written from a repository's recovery point (restores of `fs` and `s3`).

Recovery reads: rebuild a raw disk image from a recovery point, verifying every chunk.

The image is written to a temporary file next to the destination, sized with ftruncate
so that zero chunks stay holes (sparse), and renamed into place only after every chunk
was read, checked against its id, written and fsynced. A corrupt or missing chunk stops
the restore and removes the temporary file: a restore never produces bad data.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from concurrent.futures import Executor
from pathlib import Path

import structlog

from dr_common.errors import AlreadyExists, InvalidArgument, TargetError
from dr_common.repository import ZERO_ID, Repository
from dr_common.paths import check_within_roots
from dr_common.targets.base import Budget

log = structlog.get_logger()


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _commit(tmp: Path, dest: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, dest)
    else:
        os.link(tmp, dest)  # fails if dest appeared meanwhile: never clobber
        os.unlink(tmp)
    dfd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


async def restore_raw(*, repo: Repository, root_hash: str, disk: str, destination: str,
                      overwrite: bool, roots: list[str], pool: Executor, budget: Budget,
                      window: int, progress) -> dict:
    dest = check_within_roots(destination, roots, field="destination_path")
    if dest.exists() and not overwrite:
        raise AlreadyExists(f"{dest} exists; pass overwrite to replace it")
    if not dest.parent.is_dir():
        raise InvalidArgument(f"directory {dest.parent} does not exist",
                              field="destination_path")
    manifest = await repo.get_manifest(root_hash)
    loop = asyncio.get_running_loop()
    tmp = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:8]}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    written = 0
    try:
        os.ftruncate(fd, manifest.size)
        slots = asyncio.Semaphore(window)

        async def one(index: int, cid: bytes) -> None:
            nonlocal written
            offset = index * manifest.chunk_size
            length = manifest.chunk_length(index)
            try:
                async with budget.hold(length):
                    data = await repo.get_chunk(cid, disk=disk, offset=offset)
                    await loop.run_in_executor(pool, pwrite_all, fd, data, offset)
            finally:
                slots.release()
            written += length

        async with asyncio.TaskGroup() as tg:
            for seg in range(len(manifest.segments)):
                ids = await repo.segment_ids(manifest, seg)
                first = seg * manifest.segment_chunks
                for i, cid in enumerate(ids):
                    if cid == ZERO_ID:
                        continue
                    await slots.acquire()
                    tg.create_task(one(first + i, cid))
                await progress(written, manifest.size)
        await loop.run_in_executor(pool, os.fsync, fd)
        os.close(fd)
        fd = -1
        await loop.run_in_executor(pool, _commit, tmp, dest, overwrite)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    log.info("restored", disk=disk, destination=str(dest), bytes=manifest.size)
    return {"destination_path": str(dest), "bytes_written": written, "root_hash": root_hash}


def convert_to_qcow2(raw: Path, dest: Path, overwrite: bool) -> None:
    """qemu-img writes the qcow2 (skipping zeros, so it stays sparse) next to `dest` and
    it is renamed into place: a failed conversion never leaves a partial image there."""
    tmp = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        done = subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw),
                               str(tmp)], capture_output=True, text=True)
        if done.returncode != 0:
            raise TargetError(f"qemu-img convert to qcow2 failed: {done.stderr.strip()}",
                              retryable=False)
        _commit(tmp, dest, overwrite)
    finally:
        tmp.unlink(missing_ok=True)
