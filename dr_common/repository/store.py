"""Object storage under a repository: the small key/value interface, and a local one.

A repository needs only whole-object get/put, a conditional put, delete and a sorted
listing, which every target (a directory, S3, Azure Blob) offers natively. `FsStore`
is the local-directory implementation; cloud stores implement the same Protocol.

Garbage collection (dr_common/repository/gc.py) needs three more: a listing with each
object's modification time, `touch` (a writer that deduplicates against an existing
object makes it young again) and `delete_if_older` (delete unless touched since).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from dr_common.errors import ObjectNotFound, RepositoryError

# Prefix of in-flight writes. They are invisible to `list` and `get` never names them;
# a crash can leave one behind, which garbage collection may remove.
TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class ObjectInfo:
    """A listed object: its key, modification time (seconds since the epoch, the
    store's clock) and size in bytes."""

    key: str
    mtime: float
    size: int


@runtime_checkable
class ObjectStore(Protocol):
    """Async key/value object storage with atomic whole-object writes."""

    async def get(self, key: str) -> bytes:
        """The object's bytes; ObjectNotFound if there is none."""
        ...

    async def put(
        self, key: str, data: bytes | bytearray | memoryview, *, if_absent: bool = False
    ) -> bool:
        """Store `data` atomically: readers see the whole object or nothing.

        With `if_absent`, never overwrite: return False if the key exists (a conditional
        put, the primitive that makes a single writer win a race). Otherwise True.
        """
        ...

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None:
        """Remove the object; a missing key is not an error."""
        ...

    def list(self, prefix: str) -> AsyncIterator[str]:
        """Keys starting with `prefix`, in sorted order."""
        ...

    def list_info(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Like `list`, with each object's modification time and size."""
        ...

    async def touch(self, key: str) -> bool:
        """Set the object's modification time to now; False if there is no object.

        A writer whose conditional put found the object present touches it, so garbage
        collection sees it as young: it may be about to be referenced again.
        """
        ...

    async def delete_if_older(self, key: str, cutoff: float) -> int | None:
        """Delete the object unless its modification time is `cutoff` or later (it was
        written or touched since); the size deleted, or None if kept or absent. Only
        for content-addressed keys: a store may briefly remove the object and put it
        back, which is harmless only when any writer would write the same bytes."""
        ...

    async def close(self) -> None: ...

    async def sync(self) -> None:
        """Make every put that returned so far durable (a no-op where puts already are)."""
        ...


def _check_part(part: str, key: str) -> None:
    if part in ("", ".", ".."):
        raise RepositoryError(
            f"invalid object key {key!r}: empty, '.' or '..' path parts are not allowed"
        )
    if part.startswith(TMP_PREFIX):
        raise RepositoryError(f"invalid object key {key!r}: {TMP_PREFIX!r} names are reserved")
    if "\\" in part or "\0" in part:
        raise RepositoryError(f"invalid object key {key!r}: backslash and NUL are not allowed")


def check_key(key: str) -> list[str]:
    """The key's '/'-separated parts; RepositoryError if it could escape the root."""
    if not isinstance(key, str) or not key:
        raise RepositoryError(f"invalid object key {key!r}: it must be a non-empty string")
    if key.startswith("/"):
        raise RepositoryError(f"invalid object key {key!r}: it must be relative")
    parts = key.split("/")
    for part in parts:
        _check_part(part, key)
    return parts


class FsStore:
    """ObjectStore on a local directory (a mounted volume, NFS, a test's tmp dir).

    Blocking calls run in `executor` (None: the loop's default executor) so the event
    loop never waits on the disk. With `durable` (the default), a put returns only
    after the file and its directory entry are on stable storage. The replication
    engine turns it off and calls `sync()` before it reports a checkpoint or a finished
    disk: one syncfs per checkpoint instead of two fsyncs per chunk, same guarantee for
    everything the control plane is told is durable.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        executor: concurrent.futures.Executor | None = None,
        durable: bool = True,
    ) -> None:
        self.root = Path(root)
        self._executor = executor
        self._durable = durable

    def __repr__(self) -> str:
        return f"FsStore({str(self.root)!r})"

    async def _run(self, fn, *args):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key))

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await self._run(path.read_bytes)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(f"object {key!r} not found in {self.root}") from None

    async def put(
        self, key: str, data: bytes | bytearray | memoryview, *, if_absent: bool = False
    ) -> bool:
        path = self._path(key)
        return await self._run(self._put_sync, path, data, if_absent)

    async def exists(self, key: str) -> bool:
        return await self._run(self._path(key).is_file)

    async def delete(self, key: str) -> None:
        await self._run(self._delete_sync, self._path(key))

    async def list(self, prefix: str) -> AsyncIterator[str]:
        async for info in self._list(prefix, with_info=False):
            yield info.key

    async def list_info(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        async for info in self._list(prefix, with_info=True):
            yield info

    async def _list(self, prefix: str, *, with_info: bool) -> AsyncIterator[ObjectInfo]:
        # Walk only the directory the prefix pins down, one directory per executor
        # call, so listing millions of chunks never holds them all in memory.
        if prefix.startswith("/"):
            raise RepositoryError(f"invalid prefix {prefix!r}: it must be relative")
        parts = prefix.split("/")
        for part in parts[:-1]:
            _check_part(part, prefix)
        base = "/".join(parts[:-1])
        async for info in self._walk(base, with_info):
            if info.key.startswith(prefix):
                yield info

    async def touch(self, key: str) -> bool:
        return await self._run(_touch_sync, self._path(key))

    async def delete_if_older(self, key: str, cutoff: float) -> int | None:
        return await self._run(self._delete_if_older_sync, self._path(key), cutoff)

    async def close(self) -> None:
        # Nothing to release: the executor belongs to the caller.
        return None

    async def sync(self) -> None:
        if self.root.is_dir():
            await self._run(_syncfs, self.root)

    async def _walk(self, rel: str, with_info: bool) -> AsyncIterator[ObjectInfo]:
        entries = await self._run(self._scan, self.root / rel if rel else self.root,
                                  with_info)
        for name, is_dir, mtime, size in entries:
            key = f"{rel}/{name}" if rel else name
            if is_dir:
                async for sub in self._walk(key, with_info):
                    yield sub
            else:
                yield ObjectInfo(key, mtime, size)

    @staticmethod
    def _scan(path: Path, with_info: bool) -> list[tuple[str, bool, float, int]]:
        entries = []
        try:
            with os.scandir(path) as it:
                for e in it:
                    if e.name.startswith(TMP_PREFIX):
                        continue
                    try:
                        is_dir = e.is_dir(follow_symlinks=False)
                        if not is_dir and not e.is_file(follow_symlinks=False):
                            continue
                        st = e.stat(follow_symlinks=False) if with_info and not is_dir else None
                    except FileNotFoundError:  # removed while we listed (e.g. by GC)
                        continue
                    entries.append((e.name, is_dir, st.st_mtime if st else 0.0,
                                    st.st_size if st else 0))
        except (FileNotFoundError, NotADirectoryError):
            return []
        # Sort a directory as "name/" so the walk yields keys in plain string order
        # ("a.b" < "a/x" because '.' < '/').
        entries.sort(key=lambda e: e[0] + "/" if e[1] else e[0])
        return entries

    def _delete_if_older_sync(self, path: Path, cutoff: float) -> int | None:
        # Atomic against a concurrent touch: the object first leaves its name (rename
        # is atomic), so a touch either happened before, and shows in the mtime we then
        # read, or finds no object and its writer puts the chunk again. A touched object
        # goes back under its name; replacing a chunk a writer re-put meanwhile is
        # harmless, both hold the same bytes (content-addressed keys only).
        doomed = path.parent / f"{TMP_PREFIX}gc-{uuid.uuid4().hex}"
        try:
            os.rename(path, doomed)
        except (FileNotFoundError, NotADirectoryError):
            return None
        st = os.stat(doomed)
        if st.st_mtime >= cutoff:
            os.replace(doomed, path)
            return None
        os.unlink(doomed)
        if self._durable:
            _fsync_dir(path.parent)
        return st.st_size

    def _put_sync(self, path: Path, data: bytes | bytearray | memoryview, if_absent: bool) -> bool:
        parent = path.parent
        self._makedirs(parent)
        tmp = parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            with open(fd, "wb", closefd=True) as f:
                f.write(data)
                f.flush()
                if self._durable:
                    os.fsync(f.fileno())
            if if_absent:
                # link() fails if the name exists, and the name appears complete at
                # once: an atomic create-if-absent that rename() cannot give.
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    return False
                finally:
                    os.unlink(tmp)
            else:
                os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        if self._durable:
            _fsync_dir(parent)
        return True

    def _makedirs(self, path: Path) -> None:
        missing = []
        p = path
        while not p.is_dir():
            missing.append(p)
            if p == self.root or p.parent == p:
                break
            p = p.parent
        for d in reversed(missing):
            # exist_ok: a concurrent put may have made it.
            d.mkdir(parents=True, exist_ok=True)
            # A new directory is durable only once its parent's entry is.
            if self._durable:
                _fsync_dir(d.parent)

    def _delete_sync(self, path: Path) -> None:
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        if self._durable:
            _fsync_dir(path.parent)


def _touch_sync(path: Path) -> bool:
    try:
        os.utime(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def _syncfs(path: Path) -> None:
    """Flushes the filesystem holding `path` (syncfs(2)): one call instead of an fsync
    per object, which is what lets puts skip their own fsyncs."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc is not None and _libc.syncfs(fd) == 0:
            return
        os.sync()  # no syncfs: flush everything, slower but as safe
    finally:
        os.close(fd)


try:
    import ctypes
    import ctypes.util

    _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    _libc.syncfs.argtypes = [ctypes.c_int]
except (OSError, AttributeError):  # not glibc/musl: fall back to os.sync
    _libc = None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
