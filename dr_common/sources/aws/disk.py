"""`AwsDisk`: one EBS snapshot read through the EBS direct APIs, its changed blocks
listed against the previous point's snapshot (see the package docstring)."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import hashlib
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from dr_common.aws import AwsSettings, client, error_code
from dr_common.errors import SourceError
from dr_common.sources.base import Extent
from dr_common import remote
from dr_common.sources.aws.calls import REMOTES, call, not_found, paged, request, source_error
from dr_common.sources.aws.tokens import ABSENT, Page, TokenCache, refresh_at

log = structlog.get_logger()
T = TypeVar("T")

# What AWS uses today; each listing says its own `BlockSize`, and that one wins.
BLOCK_SIZE = 512 * 1024
# The largest page the listing APIs allow (MaxResults 100..10000): fewest calls.
_LIST_PAGE = 10_000
# A lazy token lookup lists this many blocks (500 MiB of disk) from the block needed:
# one listing call serves the reads that follow it, since the engine reads in order.
_LAZY_PAGE = 1_000
# Tokens kept per disk (~250 bytes each): a few MB, whatever the volume size; the
# in all before the read fails (a bad transfer, not a bad snapshot, is the usual cause).
_CORRUPT_ATTEMPTS = 3


class _Runs:
    """Listed block indices, in order, kept as runs [first, end, zero): memory in
    proportion to the number of runs, not of blocks."""

    def __init__(self) -> None:
        self.runs: list[list[Any]] = []

    def add(self, index: int, *, zero: bool = False) -> None:
        last = self.runs[-1] if self.runs else None
        if last is not None and last[1] == index and last[2] == zero:
            last[1] += 1
        else:
            self.runs.append([index, index + 1, zero])

    def extents(self, block_size: int, size: int, *, gaps_clean: bool) -> list[Extent]:
        """The listed runs (data, or zero), the gaps between them zero (never written)
        or clean (unchanged since the previous snapshot); covers [0, size) in order."""
        out: list[Extent] = []
        pos = 0
        for first, end, zero in self.runs:
            start, stop = first * block_size, min(end * block_size, size)
            if start >= size:
                break
            if start > pos:
                out.append(Extent(pos, start - pos, zero=not gaps_clean, clean=gaps_clean))
            out.append(Extent(start, stop - start, zero=zero))
            pos = stop
        if size > pos:
            out.append(Extent(pos, size - pos, zero=not gaps_clean, clean=gaps_clean))
        return _coalesce(out)


def _coalesce(extents: list[Extent]) -> list[Extent]:
    """Joins neighbours of the same kind (a zero run next to a zero gap)."""
    out: list[Extent] = []
    for e in extents:
        prev = out[-1] if out else None
        if prev is not None and (prev.zero, prev.clean) == (e.zero, e.clean):
            out[-1] = Extent(prev.start, prev.length + e.length, e.zero, e.clean)
        else:
            out.append(e)
    return out


def _sha256_b64(data: memoryview | bytearray) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


@dataclass(frozen=True)
class _Fetched:
    checksum: str  # "" when the block is absent (zeros were written instead)
    algorithm: str


def _blocks(offset: int, length: int, block_size: int) -> Iterator[tuple[int, int, int, int]]:
    """(block index, offset within the block, disk offset, length) of each block part
    of [offset, offset + length)."""
    pos, end = offset, offset + length
    while pos < end:
        index, within = divmod(pos, block_size)
        n = min(block_size - within, end - pos)
        yield index, within, pos, n
        pos += n


class _BlockRead:
    """One block's part of a read. A whole block is fetched straight into the caller's
    buffer; part of one (chunks smaller than a block) needs the whole block's bytes
    for the checksum, so it goes through a block-sized buffer."""

    def __init__(self, index: int, part: memoryview, within: int, block_size: int):
        self.index, self.part, self.within = index, part, within
        whole = within == 0 and len(part) == block_size
        self.dest = part if whole else memoryview(bytearray(block_size))
        self.future: concurrent.futures.Future[_Fetched] | None = None


class AwsDisk:
    """One EBS snapshot opened for reading through the EBS direct APIs.

    Open it with `await AwsDisk.open(...)` on the event loop; then `extents()` and
    `readinto()` may be called from worker threads (not from the loop's thread).
    """

    tracking = "changed-blocks"

    def __init__(self, settings: AwsSettings, *, snapshot_id: str, previous_snapshot_id: str,
                 size: int, loop: asyncio.AbstractEventLoop, volume_id: str = ""):
        self.settings = settings
        self.snapshot_id = snapshot_id
        self.previous_snapshot_id = previous_snapshot_id
        self.volume_id = volume_id
        self.size = size
        self.block_size = BLOCK_SIZE
        self.full_sync_reason = ""
        self.bytes_read = 0
        self.blocks_read = 0
        self._loop = loop
        self._extents: list[Extent] = []
        self._tokens = TokenCache()
        self._refresh_lock = asyncio.Lock()
        self._stack = contextlib.AsyncExitStack()
        self._ebs: Any = None
        self._closed = threading.Event()
        self._close_task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, settings: AwsSettings, *, snapshot_id: str,
                   previous_snapshot_id: str = "", size: int,
                   loop: asyncio.AbstractEventLoop | None = None,
                   volume_id: str = "") -> AwsDisk:
        """Opens the snapshot and lists its blocks (all of them, or those changed since
        `previous_snapshot_id`). `volume_id` only makes messages clearer."""
        disk = cls(settings, snapshot_id=snapshot_id, previous_snapshot_id=previous_snapshot_id,
                   size=size, loop=loop or asyncio.get_running_loop(), volume_id=volume_id)
        try:
            disk._ebs = await disk._stack.enter_async_context(client(settings, "ebs"))
            await disk._list()
        except BaseException:
            await disk.aclose()
            raise
        return disk

    # -- listing

    @property
    def _what(self) -> str:
        vol = f" of volume {self.volume_id}" if self.volume_id else ""
        return f"snapshot {self.snapshot_id}{vol}"

    async def _list(self) -> None:
        if not self.previous_snapshot_id:
            self.full_sync_reason = "first-cycle"
            await self._list_blocks()
            return
        try:
            await self._list_changed()
            return
        except SourceError as err:
            reason = _unusable_previous(err)
            if not reason:
                raise
            error = err.message
        self._tokens = TokenCache()
        # A missing *new* snapshot fails here too, with the error that says so.
        await self._list_blocks()
        log.warning("previous snapshot unusable: full sync", snapshot=self.snapshot_id,
                    previous_snapshot=self.previous_snapshot_id, volume=self.volume_id,
                    reason=reason, error=error)
        self.full_sync_reason = reason

    async def _list_blocks(self) -> None:
        """All written blocks of the new snapshot are data; the rest reads as zeros."""
        runs = _Runs()
        start = 0
        try:
            async for page in paged(self._ebs, "list_snapshot_blocks",
                                     f"list the blocks of {self._what}",
                                     SnapshotId=self.snapshot_id, MaxResults=_LIST_PAGE):
                start = self._keep(page, start, exhaustive=True)
                for b in page.get("Blocks", ()):
                    runs.add(int(b["BlockIndex"]))
        except SourceError as err:
            if not_found(err):
                raise self._missing() from err
            raise
        self._extents = runs.extents(self.block_size, self.size, gaps_clean=False)

    async def _list_changed(self) -> None:
        """Changed blocks are data, or zero where the new snapshot lacks the block (it
        has no SecondBlockToken); the rest is clean."""
        runs = _Runs()
        start = 0
        async for page in paged(self._ebs, "list_changed_blocks",
                                 f"list blocks changed between snapshot "
                                 f"{self.previous_snapshot_id} and {self._what}",
                                 FirstSnapshotId=self.previous_snapshot_id,
                                 SecondSnapshotId=self.snapshot_id, MaxResults=_LIST_PAGE):
            start = self._keep(page, start, exhaustive=False)
            for b in page.get("ChangedBlocks", ()):
                runs.add(int(b["BlockIndex"]), zero=not b.get("SecondBlockToken"))
        self._extents = runs.extents(self.block_size, self.size, gaps_clean=True)

    def _keep(self, page: dict[str, Any], start: int, *, exhaustive: bool) -> int:
        """Caches the tokens of a listing page that began at block `start`; returns
        where the next page begins."""
        listed_at = time.time()
        self._sizes(page)
        listed = page.get("Blocks") if exhaustive else page.get("ChangedBlocks")
        token_key = "BlockToken" if exhaustive else "SecondBlockToken"
        tokens = {int(b["BlockIndex"]): b[token_key] for b in listed or () if b.get(token_key)}
        end = _page_end(page, listed or (), start, -(-self.size // self.block_size))
        if not self._tokens.full():  # a huge first listing keeps its beginning
            self._tokens.add(Page(start, end, tokens, exhaustive,
                                   refresh_at(page.get("ExpiryTime"), listed_at)))
        return end

    def _sizes(self, page: dict[str, Any]) -> None:
        self.block_size = int(page.get("BlockSize") or self.block_size)
        volume_size = int(page.get("VolumeSize") or 0) * 2**30
        if volume_size and volume_size != self.size:
            log.warning("snapshot size differs from the disk's: using the snapshot's",
                        snapshot=self.snapshot_id, volume=self.volume_id,
                        snapshot_size=volume_size, disk_size=self.size)
            self.size = volume_size

    def _missing(self) -> SourceError:
        vol = f"volume {self.volume_id}" if self.volume_id else "its volume"
        return SourceError(
            f"EBS snapshot {self.snapshot_id} of {vol} does not exist (deleted during the "
            f"cycle?): the cycle fails and the next one takes a new snapshot; if this "
            f"repeats, check what deletes our snapshots (lifecycle policies, scripts)",
            reason="snapshot-missing", retryable=False)

    # -- reading (worker threads)

    def extents(self) -> list[Extent]:
        return list(self._extents)

    def readinto(self, offset: int, buf: memoryview) -> int:
        """Reads [offset, offset + len(buf)) of the snapshot; the blocks it spans are
        fetched concurrently on the event loop. Blocks: call from a worker thread."""
        self._check_thread()
        length = max(0, min(len(buf), self.size - offset))
        view = memoryview(buf).cast("B")[:length]
        reads = [_BlockRead(index, view[pos - offset:pos - offset + n], within, self.block_size)
                 for index, within, pos, n in _blocks(offset, length, self.block_size)]
        for r in reads:
            r.future = self._submit(r)
        failure: BaseException | None = None
        for r in reads:
            # Wait for every fetch even after one failed: none may write into `buf`
            # once we have returned it to the caller.
            try:
                self._finish(r)
            except BaseException as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        return length

    def _check_thread(self) -> None:
        if self._closed.is_set():
            raise SourceError(f"{self._what} was closed", reason="source-closed",
                              retryable=False)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            raise RuntimeError("AwsDisk.readinto blocks: call it from a worker thread")

    def _submit(self, r: _BlockRead) -> concurrent.futures.Future[_Fetched]:
        return asyncio.run_coroutine_threadsafe(self._fetch(r.index, r.dest), self._loop)

    def _finish(self, r: _BlockRead) -> None:
        assert r.future is not None
        for attempt in range(1, _CORRUPT_ATTEMPTS + 1):
            got = r.future.result()
            if self._verified(r.index, r.dest, got, last=attempt == _CORRUPT_ATTEMPTS):
                break
            remote.RETRIES.labels(REMOTES["ebs"].service, "GetSnapshotBlock").inc()
            r.future = self._submit(r)
        if r.dest is not r.part:
            r.part[:] = r.dest[r.within:r.within + len(r.part)]

    def _verified(self, index: int, data: memoryview, got: _Fetched, *, last: bool) -> bool:
        if not got.checksum:
            return True  # absent: zeros, nothing to check
        if got.algorithm != "SHA256":
            raise SourceError(f"block {index} of {self._what} came with a {got.algorithm} "
                              f"checksum; only SHA256 is known", reason="corrupt-block",
                              retryable=False)
        if _sha256_b64(data) == got.checksum:
            return True
        log.warning("block checksum mismatch", snapshot=self.snapshot_id, block=index,
                    final=last)
        if last:
            raise SourceError(
                f"block {index} of {self._what} did not match its checksum "
                f"{_CORRUPT_ATTEMPTS} times: the transfer or the snapshot is corrupt; the "
                f"cycle will retry", reason="corrupt-block", retryable=True)
        return False

    # -- fetching (event loop)

    async def _fetch(self, index: int, dest: memoryview) -> _Fetched:
        what = f"read block {index} of {self._what}"

        async def attempt() -> _Fetched:
            token = await self._token(index)
            if token == ABSENT:
                dest[:] = bytes(len(dest))  # never written: zeros
                return _Fetched("", "")
            try:
                resp = await self._ebs.get_snapshot_block(
                    SnapshotId=self.snapshot_id, BlockIndex=index, BlockToken=token)
            except Exception as exc:
                raise self._fetch_error(exc, index, what) from exc
            await self._read_body(resp, dest, index)
            return _Fetched(resp.get("Checksum", ""), resp.get("ChecksumAlgorithm", ""))

        return await request("ebs", "GetSnapshotBlock", what, attempt)

    async def _read_body(self, resp: dict[str, Any], dest: memoryview, index: int) -> None:
        body = resp["BlockData"]
        try:
            length = int(resp.get("DataLength") or 0)
            if length != len(dest):
                raise SourceError(
                    f"block {index} of {self._what} came with {length} bytes, not "
                    f"{len(dest)}: retrying", reason="corrupt-block", retryable=True)
            pos = 0
            while pos < length:  # straight into the caller's buffer: no joined copy
                n = await body.readinto(dest[pos:])
                if not n:
                    break
                pos += n
            if pos != length:
                raise SourceError(f"block {index} of {self._what} ended after {pos} of "
                                  f"{length} bytes: retrying", reason="source-unavailable",
                                  retryable=True)
        finally:
            body.close()
        self.bytes_read += length
        self.blocks_read += 1

    def _fetch_error(self, exc: Exception, index: int, what: str) -> SourceError:
        err = source_error(exc, what)
        if _token_refused(exc):
            # Expired (or otherwise refused) token: list that range again and retry.
            self._tokens.forget(index)
            return SourceError(f"block token of block {index} of {self._what} expired",
                               reason="block-token-expired", retryable=True)
        if not_found(err):
            return self._missing()
        return err

    async def _token(self, index: int) -> str:
        token = self._tokens.lookup(index)
        if token is not None:
            return token
        async with self._refresh_lock:  # concurrent misses of one page list it once
            token = self._tokens.lookup(index)
            if token is None:
                token = await self._list_from(index)
        return token

    async def _list_from(self, index: int) -> str:
        """Lists the new snapshot's blocks from `index` on (one lazy page) and returns
        the token of `index` (ABSENT if the snapshot lacks it)."""
        try:
            page = await call(self._ebs, "list_snapshot_blocks",
                               f"list the blocks of {self._what} from block {index}",
                               SnapshotId=self.snapshot_id, StartingBlockIndex=index,
                               MaxResults=_LAZY_PAGE)
        except SourceError as err:
            if not_found(err):
                raise self._missing() from err
            raise
        listed_at = time.time()
        self._sizes(page)
        listed = page.get("Blocks", ())
        tokens = {int(b["BlockIndex"]): b["BlockToken"] for b in listed if b.get("BlockToken")}
        end = _page_end(page, listed, index, -(-self.size // self.block_size))
        if end <= index:  # an empty page with more to come says nothing about `index`
            raise SourceError(f"listing the blocks of {self._what} from block {index} gave "
                              f"none: retrying", reason="source-unavailable", retryable=True)
        self._tokens.add(Page(index, end, tokens, True,
                               refresh_at(page.get("ExpiryTime"), listed_at)))
        return tokens.get(index, ABSENT)

    # -- closing

    async def aclose(self) -> None:
        self._closed.set()
        self._ebs = None
        await self._stack.aclose()  # a second call finds the stack empty

    def close(self) -> None:
        """Closes the client. From a worker thread (the engine closes sources with
        run_in_executor) it waits for the loop to do it; on the loop's own thread it
        can only schedule it: there, prefer `await aclose()`."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._close_task = self._loop.create_task(self.aclose())
        elif not self._loop.is_closed():
            asyncio.run_coroutine_threadsafe(self.aclose(), self._loop).result()

    def __enter__(self) -> AwsDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> AwsDisk:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _page_end(page: dict[str, Any], listed: Iterable[dict[str, Any]], start: int,
              nblocks: int) -> int:
    """The block after the range a listing page speaks for: the last listed block when
    more pages follow, else the end of the disk."""
    if not page.get("NextToken"):
        return nblocks
    return max((int(b["BlockIndex"]) + 1 for b in listed), default=start)


def _token_refused(exc: BaseException) -> bool:
    """AWS says ValidationException with Reason INVALID_BLOCK_TOKEN for an expired or
    unknown token."""
    if error_code(exc) != "ValidationException":
        return False
    reason = _validation_reason(exc)
    message = str(getattr(exc, "response", {}).get("Error", {}).get("Message", ""))
    return reason == "INVALID_BLOCK_TOKEN" or (not reason and "token" in message.lower())


def _validation_reason(exc: BaseException | None) -> str:
    """The `Reason` of an EBS ValidationException (botocore puts modelled error fields
    at the top of the response)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Reason") or response.get("Error", {}).get("Reason") or "")


def _unusable_previous(err: SourceError) -> str:
    """The full-sync reason when ListChangedBlocks cannot use the previous snapshot."""
    if not_found(err):
        return "previous-snapshot-missing"
    if _validation_reason(err.__cause__) == "UNRELATED_SNAPSHOTS":
        return "previous-snapshot-unrelated"
    return ""

