"""The `aws` site kind: EC2 instances whose EBS volumes are read through the EBS direct
APIs.

Inventory is EC2: one workload per instance, its attached volumes as disks (root
first). A consistent point is a crash-consistent group of EBS snapshots, one
`CreateSnapshots` call per instance, so all volumes of an instance are captured at the
same instant (EBS offers no atomic point across instances: a plan spanning several
instances gets per-instance consistency).

Changed blocks come from the snapshots themselves, not from a tracker of ours:
- first cycle: `ListSnapshotBlocks` lists the blocks ever written; they are data, the
  rest were never written and are zero extents (never read, never sent);
- later cycles: `ListChangedBlocks(previous, new)` lists the blocks that differ; they
  are data and everything else is *clean*: identical to the previous snapshot, hence
  to the previous recovery point made from it, so the engine keeps that point's chunk
  ids without reading. Clean is not zero: an unchanged block may hold data.
A previous snapshot that is gone (deleted by hand, or by a retention gone wrong) or
unrelated to the new one makes a full sync of the written blocks, and says why.

Reads are `GetSnapshotBlock` calls, each needing a *block token* from a listing.
Tokens expire (the listing's `ExpiryTime`) and a full listing of a large volume is
millions of tokens, so tokens are kept in a bounded cache of listing pages and fetched
lazily: a block the first listing did not give (an unchanged neighbour of a changed
block in the same engine chunk, or a page evicted or near expiry) is looked up by
listing the new snapshot from that block on. A block absent from the new snapshot was
never written and reads as zeros.

Threads: the engine calls `extents()` and `readinto()` from worker threads while the
event loop runs. The aiobotocore client lives on the loop; `readinto` submits each
block's fetch to it with `run_coroutine_threadsafe` and waits, and verifies the
block's SHA-256 in the worker thread, so the loop never hashes.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import concurrent.futures
import contextlib
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import structlog

from dr_common.aws import AwsSettings, aws_error, client, error_code
from dr_common.errors import InvalidArgument, SourceError
from dr_common.sources.base import DiskInfo, Extent, WorkloadInfo
from dr_common.targets import metrics

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
# engine's window is far smaller than the 10 GiB of disk they cover.
_TOKEN_CACHE = 20_000
# A page is re-listed before its tokens expire: at 80 % of their lifetime, and at the
# latest this long before expiry (clocks differ a little; a fetch takes time).
_EXPIRY_MARGIN = 300.0
# A block whose bytes do not match its checksum is fetched again this many times
# in all before the read fails (a bad transfer, not a bad snapshot, is the usual cause).
_CORRUPT_ATTEMPTS = 3
# Snapshot completion polling (DescribeSnapshots): from quick to patient.
_POLL_FIRST, _POLL_MAX = 0.5, 15.0
# EC2 states whose instances have nothing left to protect.
_GONE = frozenset({"terminated", "shutting-down"})

# Labels of our calls in the shared request/retry/throttle counters
# (dr_common.targets.metrics): EBS direct reads, and EC2 inventory and snapshots.
METRIC_TARGETS = {"ebs": "ebs-source", "ec2": "ec2-source"}


# --- calls ----------------------------------------------------------------------------

def _source_error(exc: BaseException, what: str) -> SourceError:
    """Our source failing: a SourceError that keeps aws_error's reason and retryability
    (throttled, not-found, access-denied...), so retry() and callers can act on it."""
    if isinstance(exc, SourceError):
        return exc
    err = aws_error(exc, what)
    return SourceError(err.message, reason=err.reason, retryable=err.retryable)


async def _request(service: str, op: str, what: str, fn: Callable[[], Awaitable[T]]) -> T:
    """One API request (`fn` makes one attempt) with the retries every remote call gets
    (throttling until the deadline, transient failures a few times), counted."""
    async def attempt() -> T:
        try:
            return await fn()
        except Exception as exc:
            raise _source_error(exc, what) from exc

    return await metrics.call(METRIC_TARGETS[service], op, attempt)


async def _call(c: Any, method: str, what: str, **params: Any) -> dict[str, Any]:
    return await _request(c.meta.service_model.service_name,
                          c.meta.method_to_api_mapping.get(method, method), what,
                          lambda: getattr(c, method)(**params))


async def _paged(c: Any, method: str, what: str, **params: Any
                 ) -> AsyncIterator[dict[str, Any]]:
    """The pages of a NextToken-paginated call, each page retried on its own (botocore's
    paginators cannot retry one page)."""
    token = ""
    while True:
        page = await _call(c, method, what, **params, **({"NextToken": token} if token else {}))
        yield page
        token = page.get("NextToken") or ""
        if not token:
            return


def _not_found(err: SourceError) -> bool:
    return err.reason == "not-found"


# --- inventory ------------------------------------------------------------------------

def _name(tags: Iterable[dict[str, str]] | None, default: str) -> str:
    return next((t["Value"] for t in tags or () if t.get("Key") == "Name" and t.get("Value")),
                default)


def _attached(instance: dict[str, Any]) -> list[tuple[str, str]]:
    """(device, volume id) of an instance's EBS volumes, root first, then by device."""
    root = instance.get("RootDeviceName", "")
    found = [(m["DeviceName"], m["Ebs"]["VolumeId"])
             for m in instance.get("BlockDeviceMappings", ()) if m.get("Ebs", {}).get("VolumeId")]
    return sorted(found, key=lambda dv: (dv[0] != root, dv[0]))


async def _instances(ec2: Any, instance_ids: list[str] | None = None) -> list[dict[str, Any]]:
    # EC2 refuses MaxResults together with InstanceIds (and then returns one page).
    params: dict[str, Any] = {"InstanceIds": instance_ids} if instance_ids else {"MaxResults": 1000}
    return [i async for page in _paged(ec2, "describe_instances", "list EC2 instances", **params)
            for r in page.get("Reservations", ()) for i in r.get("Instances", ())
            if i.get("State", {}).get("Name") not in _GONE]


async def discover(settings: AwsSettings) -> list[WorkloadInfo]:
    """Inventory of an `aws` site: one workload per live EC2 instance, its attached EBS
    volumes as disks (root first, then by device name)."""
    async with client(settings, "ec2") as ec2:
        instances = await _instances(ec2)
        sizes = {v["VolumeId"]: int(v["Size"]) async for page in _paged(
            ec2, "describe_volumes", "list EBS volumes", MaxResults=500,
            Filters=[{"Name": "attachment.status", "Values": ["attached"]}])
            for v in page.get("Volumes", ())}
    found = []
    for inst in instances:
        disks = tuple(DiskInfo(id=vol, display_name=f"{dev} ({vol})", locator=vol,
                               size=sizes[vol] * 2**30, sector_size=512, cbt="ebs-direct")
                      for dev, vol in _attached(inst) if vol in sizes)
        iid = inst["InstanceId"]
        found.append(WorkloadInfo(id=iid, display_name=_name(inst.get("Tags"), iid),
                                  disks=disks))
    return found


# --- consistency-group snapshots ---------------------------------------------------------

def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def _group_spec(instance: dict[str, Any], wanted: list[str]) -> dict[str, Any]:
    """CreateSnapshots' InstanceSpecification that captures exactly `wanted`."""
    iid = instance["InstanceId"]
    attached = _attached(instance)
    missing = sorted(set(wanted) - {vol for _dev, vol in attached})
    if missing:
        raise InvalidArgument(
            f"volume(s) {', '.join(missing)} are not attached to instance {iid}: run the "
            f"site inventory again and update the plan's disks", field="disks")
    root = instance.get("RootDeviceName", "")
    spec: dict[str, Any] = {"InstanceId": iid}
    if not any(dev == root and vol in wanted for dev, vol in attached):
        spec["ExcludeBootVolume"] = True
    excluded = [vol for dev, vol in attached if dev != root and vol not in wanted]
    if excluded:
        spec["ExcludeDataVolumeIds"] = excluded
    return spec


async def snapshot_group(settings: AwsSettings, instance_volumes: dict[str, list[str]], *,
                         tags: dict[str, str], timeout: float,
                         copy_volume_tags: bool = False) -> dict[str, str]:
    """Crash-consistent snapshots of each instance's listed volumes, taken together
    (`CreateSnapshots`), tagged, and waited for until `completed`.

    Returns volume id -> snapshot id. On any failure the snapshots made are deleted, so a
    failed cycle leaves nothing behind."""
    wanted = {iid: vols for iid, vols in instance_volumes.items() if vols}
    made: dict[str, str] = {}
    async with client(settings, "ec2") as ec2:
        try:
            instances = {i["InstanceId"]: i for i in await _instances(ec2, sorted(wanted))}
            for iid in wanted:
                if iid not in instances:
                    raise SourceError(f"instance {iid} is gone (terminated or not found): "
                                      f"remove it from the plan or run the inventory again",
                                      reason="workload-missing", retryable=False)
            specs = [(iid, _group_spec(instances[iid], vols)) for iid, vols in wanted.items()]
            results = await asyncio.gather(*(
                _create_group(ec2, iid, spec, tags, copy_volume_tags) for iid, spec in specs),
                return_exceptions=True)
            for result in results:  # keep every snapshot made, even if a sibling failed
                if isinstance(result, dict):
                    made.update(result)
            failed = next((r for r in results if isinstance(r, BaseException)), None)
            if failed is not None:
                raise failed
            extra = {v: s for v, s in made.items()
                     if not any(v in vols for vols in wanted.values())}
            if extra:
                # AWS honours ExcludeDataVolumeIds; a peer that does not still must not
                # leave snapshots nobody will delete.
                await _delete(ec2, extra.values())
            made = {v: s for v, s in made.items() if v not in extra}
            await _wait_completed(ec2, made, timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                await _delete(ec2, made.values())
            raise
    return made


async def _create_group(ec2: Any, iid: str, spec: dict[str, Any], tags: dict[str, str],
                        copy_volume_tags: bool) -> dict[str, str]:
    params: dict[str, Any] = {
        "InstanceSpecification": spec,
        "Description": f"Hybrid DR consistency group of {iid}",
        "TagSpecifications": [{"ResourceType": "snapshot", "Tags": _tag_list(tags)}]}
    if copy_volume_tags:
        params["CopyTagsFromSource"] = "volume"
    resp = await _call(ec2, "create_snapshots", f"snapshot the volumes of {iid}", **params)
    return {s["VolumeId"]: s["SnapshotId"] for s in resp.get("Snapshots", ())}


async def _wait_completed(ec2: Any, snapshots: dict[str, str], timeout: float) -> None:
    """Polls until every snapshot is `completed`; an `error` snapshot fails the group."""
    volume_of = {s: v for v, s in snapshots.items()}
    pending = set(volume_of)
    deadline = time.monotonic() + timeout
    delay = _POLL_FIRST
    while pending:
        resp = await _call(ec2, "describe_snapshots", "check snapshot progress",
                           SnapshotIds=sorted(pending))
        for snap in resp.get("Snapshots", ()):
            sid, state = snap["SnapshotId"], snap.get("State", "")
            if state == "error":
                raise SourceError(
                    f"EBS snapshot {sid} of volume {volume_of[sid]} failed "
                    f"({snap.get('StateMessage') or 'no reason given'}): the cycle will "
                    f"retry; if it keeps failing, check the volume in the EC2 console",
                    reason="snapshot-failed", retryable=True)
            if state == "completed":
                pending.discard(sid)
        if not pending:
            return
        if time.monotonic() + delay > deadline:
            vols = ", ".join(sorted(volume_of[s] for s in pending))
            raise SourceError(
                f"EBS snapshots of volume(s) {vols} were not completed within {timeout:g} s: "
                f"a first snapshot of a large volume can take hours; raise the plan's "
                f"snapshot timeout", reason="snapshot-timeout", retryable=True)
        await asyncio.sleep(delay)
        delay = min(_POLL_MAX, delay * 2)


async def _delete(ec2: Any, snapshot_ids: Iterable[str]) -> None:
    async def one(sid: str) -> None:
        try:
            await _call(ec2, "delete_snapshot", f"delete snapshot {sid}", SnapshotId=sid)
        except SourceError as err:
            if not _not_found(err):  # already gone is what we wanted
                raise
    await asyncio.gather(*(one(s) for s in snapshot_ids))


async def delete_snapshots(settings: AwsSettings, snapshot_ids: Iterable[str]) -> None:
    """Deletes snapshots; those already gone are fine."""
    ids = list(snapshot_ids)
    if ids:
        async with client(settings, "ec2") as ec2:
            await _delete(ec2, ids)


async def stale_snapshots(settings: AwsSettings, tags: dict[str, str]) -> list[str]:
    """Our snapshots carrying all of `tags` (e.g. a plan's tag), for cleanup."""
    if not tags:
        raise InvalidArgument("give at least one tag: without one every snapshot of the "
                              "account would match", field="tags")
    filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()]
    async with client(settings, "ec2") as ec2:
        return [s["SnapshotId"] async for page in _paged(
            ec2, "describe_snapshots", "list snapshots", OwnerIds=["self"], Filters=filters,
            MaxResults=1000) for s in page.get("Snapshots", ())]


# --- block tokens -----------------------------------------------------------------------

ABSENT = ""  # the block is not in the snapshot: never written, reads as zeros


@dataclass
class _Page:
    """Tokens of one listing page, covering blocks [start, end).

    `exhaustive`: a block of the range without a token is absent from the snapshot
    (ListSnapshotBlocks). A ListChangedBlocks page is not: its missing blocks are
    merely unchanged, and their tokens must be listed when needed."""

    start: int
    end: int
    tokens: dict[int, str]
    exhaustive: bool
    refresh_at: float  # time.time() after which its tokens are re-listed


def _refresh_at(expiry: datetime | None, listed_at: float) -> float:
    if expiry is None:
        return float("inf")
    expires = expiry.timestamp()
    return expires - min(_EXPIRY_MARGIN, max(0.0, expires - listed_at) * 0.2)


class _TokenCache:
    """Non-overlapping listing pages, least recently used evicted beyond `capacity`
    tokens. Used from the event loop thread only."""

    def __init__(self, capacity: int = _TOKEN_CACHE):
        self.capacity = capacity
        self._pages: OrderedDict[int, _Page] = OrderedDict()  # by start, in LRU order
        self._starts: list[int] = []  # sorted
        self._count = 0

    def lookup(self, index: int) -> str | None:
        """The token of block `index`, ABSENT, or None (not known, or about to expire)."""
        i = bisect.bisect_right(self._starts, index) - 1
        if i < 0:
            return None
        page = self._pages[self._starts[i]]
        if index >= page.end or time.time() >= page.refresh_at:
            return None
        self._pages.move_to_end(page.start)
        token = page.tokens.get(index)
        if token is not None:
            return token
        return ABSENT if page.exhaustive else None

    def full(self) -> bool:
        return self._count >= self.capacity

    def add(self, page: _Page) -> None:
        for start in [s for s in self._starts if s < page.end and self._pages[s].end > page.start]:
            self._remove(start)
        self._pages[page.start] = page
        bisect.insort(self._starts, page.start)
        self._count += len(page.tokens)
        while self._count > self.capacity and len(self._pages) > 1:
            self._remove(next(iter(self._pages)))

    def forget(self, index: int) -> None:
        """Drops the page holding `index` (its token was refused)."""
        i = bisect.bisect_right(self._starts, index) - 1
        if i >= 0 and index < self._pages[self._starts[i]].end:
            self._remove(self._starts[i])

    def _remove(self, start: int) -> None:
        page = self._pages.pop(start)
        del self._starts[bisect.bisect_left(self._starts, start)]
        self._count -= len(page.tokens)


# --- the disk ---------------------------------------------------------------------------

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
        self._tokens = _TokenCache()
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
        self._tokens = _TokenCache()
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
            async for page in _paged(self._ebs, "list_snapshot_blocks",
                                     f"list the blocks of {self._what}",
                                     SnapshotId=self.snapshot_id, MaxResults=_LIST_PAGE):
                start = self._keep(page, start, exhaustive=True)
                for b in page.get("Blocks", ()):
                    runs.add(int(b["BlockIndex"]))
        except SourceError as err:
            if _not_found(err):
                raise self._missing() from err
            raise
        self._extents = runs.extents(self.block_size, self.size, gaps_clean=False)

    async def _list_changed(self) -> None:
        """Changed blocks are data, or zero where the new snapshot lacks the block (it
        has no SecondBlockToken); the rest is clean."""
        runs = _Runs()
        start = 0
        async for page in _paged(self._ebs, "list_changed_blocks",
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
            self._tokens.add(_Page(start, end, tokens, exhaustive,
                                   _refresh_at(page.get("ExpiryTime"), listed_at)))
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
            metrics.TARGET_RETRIES.labels(METRIC_TARGETS["ebs"], "GetSnapshotBlock").inc()
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

        return await _request("ebs", "GetSnapshotBlock", what, attempt)

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
        err = _source_error(exc, what)
        if _token_refused(exc):
            # Expired (or otherwise refused) token: list that range again and retry.
            self._tokens.forget(index)
            return SourceError(f"block token of block {index} of {self._what} expired",
                               reason="block-token-expired", retryable=True)
        if _not_found(err):
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
            page = await _call(self._ebs, "list_snapshot_blocks",
                               f"list the blocks of {self._what} from block {index}",
                               SnapshotId=self.snapshot_id, StartingBlockIndex=index,
                               MaxResults=_LAZY_PAGE)
        except SourceError as err:
            if _not_found(err):
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
        self._tokens.add(_Page(index, end, tokens, True,
                               _refresh_at(page.get("ExpiryTime"), listed_at)))
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
    if _not_found(err):
        return "previous-snapshot-missing"
    if _validation_reason(err.__cause__) == "UNRELATED_SNAPSHOTS":
        return "previous-snapshot-unrelated"
    return ""
