"""The SourceDisk contract (dr_common.sources.base): what every source must report and
read for one known disk, run against each source kind on its real peer: `file`
(FileDisk on a sparse image), `kvm` (KvmDisk: a qcow2 image over qemu-nbd, with dirty
bitmaps; and LiveDisk: a running VM's disk at a QMP point, over QEMU's NBD server), `aws` (AwsDisk: EBS snapshots through the EBS direct APIs of the AWS peer),
`vsphere` (VsphereDisk: a VM disk at a VM snapshot, CBT and datastore reads on the
vSphere peer) and `azure` (AzureDisk: incremental snapshots of a managed disk, page-range
diffs through a read SAS, on the Azure peer).

Every kind holds the same content: a 1 GiB disk (the smallest EBS volume) written in
512 KiB blocks (EBS's block, a multiple of qcow2 clusters, bitmap granules and filesystem
blocks, so every kind can report it exactly), holes elsewhere. Each kind is built by its
factory below, in one place; a factory writes blocks, zeroes (discards) them, and opens
the disk at a new point: the first open is a first cycle, each later one an incremental
since the one before. A new kind joins with one factory and one line in SOURCES.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
from pathlib import Path
from typing import Any, Protocol

import pytest

from dr_common.errors import SourceError
from dr_common.sources.base import Extent, SourceDisk
from tests.helpers.disks import (GiB, KiB, MiB, block_content, punch_hole, qemu_io,
                                 write_at)
from tests.peers.tools import require_qemu

SIZE = GiB
BLOCK = 512 * KiB
NBLOCKS = SIZE // BLOCK
WRITTEN = (0, 1, 2, 10, 700, 701, 702, 703, NBLOCKS - 1)  # the known disk's data blocks
# Between the first point and the second: blocks overwritten (1) or written where there
# was a hole (11, 1500); a block zeroed (701, discarded); the others left alone.
CHANGED = (1, 11, 1500)
ZEROED = (701,)
UNCHANGED = tuple(sorted(set(WRITTEN) - set(CHANGED) - set(ZEROED)))
PIECE = 4 * MiB  # what the suite reads at a time: an engine chunk's order of size


class Adapter(Protocol):
    """A disk of one source kind, as its factory builds it."""

    def write(self, blocks: dict[int, bytes]) -> None:
        """Writes each block's bytes at its index."""

    def zero(self, indices: tuple[int, ...]) -> None:
        """Discards the blocks: they read as zeros from now on."""

    async def open(self) -> SourceDisk:
        """The disk at a new point (the first: a first cycle; later ones: incremental)."""


# -- one factory per source kind ----------------------------------------------------------


class FileSource:
    """A sparse raw image; a discard punches a hole. No points: the file as it is."""

    def __init__(self, tmp_path: Path):
        self.path = tmp_path / "disk.img"
        with open(self.path, "wb") as f:
            f.truncate(SIZE)

    def write(self, blocks: dict[int, bytes]) -> None:
        for index, data in blocks.items():
            write_at(self.path, index * BLOCK, data)

    def zero(self, indices: tuple[int, ...]) -> None:
        for index in indices:
            punch_hole(self.path, index * BLOCK, BLOCK)

    async def open(self) -> SourceDisk:
        from dr_common.sources.file import FileDisk
        return FileDisk(self.path)


class KvmSource:
    """A qcow2 image written with qemu-io; each point adds a bitmap and reads the last."""

    def __init__(self, tmp_path: Path):
        require_qemu()
        self.dir, self.image, self.points = tmp_path, tmp_path / "disk.qcow2", 0
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(self.image), str(SIZE)],
                       check=True)

    def write(self, blocks: dict[int, bytes]) -> None:
        for index, data in blocks.items():
            (self.dir / f"block-{index}").write_bytes(data)
        qemu_io(self.image, *(f"write -s {self.dir / f'block-{index}'} {index * BLOCK} {BLOCK}"
                              for index in blocks))

    def zero(self, indices: tuple[int, ...]) -> None:
        qemu_io(self.image, *(f"discard {index * BLOCK} {BLOCK}" for index in indices))

    async def open(self) -> SourceDisk:
        from dr_common.sources.kvm import KvmDisk, bitmap_name
        previous = bitmap_name("contract", str(self.points)) if self.points else ""
        self.points += 1
        return await asyncio.to_thread(KvmDisk, self.image, previous_bitmap=previous,
                                       new_bitmap=bitmap_name("contract", str(self.points)))


class AwsSource:
    """An EBS volume on the AWS peer; each point is an EC2 snapshot of it."""

    def __init__(self, aws_peer: Any, boto: Any, aws_settings: Any):
        self.peer, self.ec2, self.settings, self.previous = aws_peer, boto("ec2"), aws_settings, ""
        self.volume = self.ec2.create_volume(Size=SIZE // GiB,
                                             AvailabilityZone="us-east-1a")["VolumeId"]

    def write(self, blocks: dict[int, bytes]) -> None:
        for index, data in blocks.items():
            self.peer.write_volume(self.volume, index * BLOCK, data)

    def zero(self, indices: tuple[int, ...]) -> None:
        for index in indices:
            self.peer.discard_volume(self.volume, index * BLOCK, BLOCK)

    async def open(self) -> SourceDisk:
        from dr_common.sources.aws import AwsDisk
        snapshot = self.ec2.create_snapshot(VolumeId=self.volume)["SnapshotId"]
        disk = await AwsDisk.open(self.settings, snapshot_id=snapshot, size=SIZE,
                                  previous_snapshot_id=self.previous, volume_id=self.volume)
        self.previous = snapshot
        return disk


class VsphereSource:
    """A 1 GiB disk added to a VM of the vSphere peer, CBT on; each point is a VM
    snapshot (the one before is removed first: the base is frozen at the only one)."""

    VM = "DC0_H0_VM1"

    def __init__(self, vsphere_peer: Any):
        from dr_common.vsphere import VsphereSettings
        from tests.helpers.vsphere import add_disk, connect, enable_cbt, find_vm
        self.peer = vsphere_peer
        self.vm = find_vm(connect(vsphere_peer), self.VM)
        self.key = add_disk(self.vm, SIZE)
        enable_cbt(self.vm)
        self.settings = VsphereSettings(url=vsphere_peer.url, user=vsphere_peer.user,
                                        password=vsphere_peer.password,
                                        ca_file=str(vsphere_peer.ca_file))
        self.snapshot, self.change_id = None, ""

    def write(self, blocks: dict[int, bytes]) -> None:
        for index, data in blocks.items():
            self.peer.write(self.VM, self.key, index * BLOCK, data)

    def zero(self, indices: tuple[int, ...]) -> None:
        for index in indices:
            self.peer.discard(self.VM, self.key, index * BLOCK, BLOCK)

    async def open(self) -> SourceDisk:
        from pyVim.task import WaitForTask
        from dr_common.sources.vsphere import VsphereDisk
        from tests.helpers.vsphere import snapshot
        if self.snapshot is not None:
            await asyncio.to_thread(WaitForTask, self.snapshot.RemoveSnapshot_Task(
                removeChildren=False))
        self.snapshot = await asyncio.to_thread(snapshot, self.vm, "contract")
        disk = await VsphereDisk.open(
            self.settings, vm_uuid=self.vm.config.instanceUuid, device_key=self.key,
            snapshot=self.snapshot._moId, previous_change_id=self.change_id,
            previous_size=SIZE if self.change_id else 0)
        self.change_id = disk.change_id
        return disk


class LiveKvmSource:
    """A running VM's qcow2 disk (QEMU paused, written through HMP qemu-io as a guest
    would); each point is a QMP transaction (kvm_live), the one before dropped first."""

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path):
        from tests.helpers.qemuvm import PausedVm
        require_qemu()
        self.dir, image = tmp_path, tmp_path / "disk.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), str(SIZE)],
                       check=True)
        self.vm = PausedVm(tmp_path / "vm.qmp", [image])
        request.addfinalizer(self.vm.stop)
        self.points, self.keep = 0, []

    def write(self, blocks: dict[int, bytes]) -> None:
        for index, data in blocks.items():
            (self.dir / f"block-{index}").write_bytes(data)
            self.vm.io(0, f"write -s {self.dir / f'block-{index}'} {index * BLOCK} {BLOCK}")

    def zero(self, indices: tuple[int, ...]) -> None:
        for index in indices:
            self.vm.io(0, f"write -z {index * BLOCK} {BLOCK}")

    async def open(self) -> SourceDisk:
        from dr_common.proto.dr.v1 import nodes_pb2
        from dr_common.sources import kvm
        from dr_common.sources.base import SourceEnv
        env = SourceEnv(roots=(str(self.dir),))
        disks = [nodes_pb2.SnapshotDisk(disk="d", workload=w.id, locator=d.locator)
                 for w in kvm.discover(self.dir) for d in w.disks]
        if self.points:
            await kvm.drop_snapshots(nodes_pb2.DropSnapshotsSpec(
                plan="plans/contract", disks=disks, cycle=f"plans/contract/cycles/{self.points}"),
                env)
        self.points += 1
        spec = nodes_pb2.SnapshotSpec(plan="plans/contract", disks=disks,
                                      cycle=f"plans/contract/cycles/{self.points}",
                                      keep_snapshot_ids=self.keep)
        snap, = await kvm.take_snapshots(spec, env)
        self.keep = [snap.snapshot_id]
        return await kvm.open_source(nodes_pb2.KvmSource(
            path=disks[0].locator, snapshot=snap.snapshot_id), None, env)


class AzureSource:
    """A 1 GiB managed disk of the Azure peer; each point is an incremental snapshot."""

    def __init__(self, azure_peer: Any):
        from azure.mgmt.compute import ComputeManagementClient

        from dr_common.azure import AzureSettings
        from tests.helpers.azure import mgmt
        self.peer, self.group = azure_peer, azure_peer.source_group
        self.compute = mgmt(ComputeManagementClient, azure_peer)
        self.disk = self.compute.disks.begin_create_or_update(self.group, "contract", {
            "location": azure_peer.location, "properties": {
                "creationData": {"createOption": "Empty"}, "diskSizeGB": SIZE // GiB}}).result()
        self.settings = AzureSettings(
            subscription_id=azure_peer.subscription_id, resource_groups=(self.group,),
            location=azure_peer.location, tenant_id=azure_peer.tenant_id,
            client_id=azure_peer.client_id, client_secret=azure_peer.client_secret,
            arm_endpoint=azure_peer.arm_endpoint, authority_host=azure_peer.authority_host,
            ca_file=str(azure_peer.ca_file))
        self.points, self.previous = 0, ""

    def write(self, blocks: dict[int, bytes]) -> None:
        for index, data in blocks.items():
            self.peer.write("contract", index * BLOCK, data, group=self.group)

    def zero(self, indices: tuple[int, ...]) -> None:
        for index in indices:
            self.peer.clear("contract", index * BLOCK, BLOCK, group=self.group)

    async def open(self) -> SourceDisk:
        from dr_common.sources.azure.disk import AzureDisk
        self.points += 1
        snapshot = await asyncio.to_thread(lambda: self.compute.snapshots.begin_create_or_update(
            self.group, f"contract-{self.points}", {
                "location": self.peer.location, "properties": {
                    "incremental": True, "creationData": {
                        "createOption": "Copy", "sourceResourceId": self.disk.id}}}).result())
        disk = await AzureDisk.open(self.settings, snapshot_id=snapshot.id,
                                    previous_snapshot_id=self.previous, disk_id=self.disk.id)
        self.previous = snapshot.id
        return disk


SOURCES = {
    "file": lambda request, tmp_path: FileSource(tmp_path),
    "kvm": lambda request, tmp_path: KvmSource(tmp_path),
    "kvm-live": LiveKvmSource,
    "aws": lambda request, tmp_path: AwsSource(
        *(request.getfixturevalue(f) for f in ("aws_peer", "boto", "aws_settings"))),
    "vsphere": lambda request, tmp_path: VsphereSource(request.getfixturevalue("vsphere_peer")),
    "azure": lambda request, tmp_path: AzureSource(request.getfixturevalue("azure_peer")),
}


# -- the known disk over any kind --------------------------------------------------------


class KnownDisk:
    """A source's disk and the model of what it holds: {block index: bytes}."""

    def __init__(self, kind: str, adapter: Adapter):
        self.kind, self.adapter = kind, adapter
        self.blocks: dict[int, bytes] = {}
        self.opened: list[SourceDisk] = []
        self._rnd = random.Random(kind)

    def write(self, indices: tuple[int, ...]) -> None:
        data = {i: self._rnd.randbytes(BLOCK) for i in indices}
        self.adapter.write(data)
        self.blocks.update(data)

    def zero(self, indices: tuple[int, ...]) -> None:
        self.adapter.zero(indices)
        for index in indices:
            self.blocks.pop(index, None)

    async def open(self) -> SourceDisk:
        disk = await self.adapter.open()
        self.opened.append(disk)
        return disk

    def expected(self, offset: int, length: int) -> bytes:
        return block_content(self.blocks, BLOCK, offset, length)

    def written(self) -> list[tuple[int, int]]:
        """The written areas as merged (start, end) byte ranges."""
        return merged((i * BLOCK, (i + 1) * BLOCK) for i in sorted(self.blocks))


@pytest.fixture(params=list(SOURCES))
async def source(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """The known disk on each source kind in turn; disks a test left open are closed."""
    disk = KnownDisk(request.param, SOURCES[request.param](request, tmp_path))
    disk.write(WRITTEN)
    yield disk
    for opened in disk.opened:
        await asyncio.to_thread(opened.close)


def merged(ranges: Any) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in ranges:
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def holes(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """What the disk has outside the sorted, merged `ranges`."""
    out, pos = [], 0
    for start, end in ranges + [(SIZE, SIZE)]:
        if start > pos:
            out.append((pos, start))
        pos = end
    return out


def where(extents: list[Extent], **kind: bool) -> list[tuple[int, int]]:
    """The merged ranges of the extents with these flags (zero=..., clean=...)."""
    return merged((e.start, e.end) for e in extents
                  if all(getattr(e, flag) == value for flag, value in kind.items()))


def covers(ranges: list[tuple[int, int]], index: int) -> bool:
    return any(s <= index * BLOCK and (index + 1) * BLOCK <= e for s, e in ranges)


def assert_tiles(disk: SourceDisk, extents: list[Extent]) -> None:
    """The extents cover the disk in order, without gaps or overlaps."""
    assert extents and extents[0].start == 0 and extents[-1].end == disk.size
    assert all(e.length > 0 for e in extents), extents
    assert all(a.end == b.start for a, b in zip(extents, extents[1:])), \
        "extents must tile the disk"


async def read(disk: SourceDisk, offset: int, length: int) -> tuple[int, bytes]:
    """readinto from a worker thread, as the engine reads: (count, bytes)."""
    buf = bytearray(length)
    n = await asyncio.to_thread(disk.readinto, offset, memoryview(buf))
    return n, bytes(buf[:n])


async def assert_reads_the_disk(source: KnownDisk, disk: SourceDisk,
                                extents: list[Extent]) -> None:
    """Reads every extent, clean ones too, in pieces, four at a time: each piece is the
    disk's bytes, and zero extents read as zeros."""
    sem = asyncio.Semaphore(4)
    zeros = bytes(PIECE)

    async def piece(e: Extent, offset: int) -> None:
        length = min(PIECE, e.end - offset)
        async with sem:
            n, got = await read(disk, offset, length)
        assert n == length, f"short read at {offset}"
        assert got == source.expected(offset, length), f"bytes differ at {offset}"
        if e.zero:
            assert got == zeros[:length], f"zero extent {e} does not read as zeros"

    await asyncio.gather(*(piece(e, off) for e in extents
                           for off in range(e.start, e.end, PIECE)))


# -- the contract -----------------------------------------------------------------------


async def test_first_point_reports_the_whole_disk(source: KnownDisk) -> None:
    disk = await source.open()
    extents = disk.extents()
    assert disk.size == SIZE
    assert_tiles(disk, extents)
    # No previous point: nothing is clean. Only a source with tracking has it to lose.
    assert where(extents, clean=True) == []
    assert disk.full_sync_reason == ("" if disk.tracking == "hash-diff" else "first-cycle")
    # Allocation is reported: the data extents are the written areas, the rest is zero.
    assert where(extents, zero=False) == source.written()
    assert where(extents, zero=True) == holes(source.written())


async def test_readinto_returns_the_disks_bytes(source: KnownDisk) -> None:
    disk = await source.open()
    await assert_reads_the_disk(source, disk, disk.extents())
    for offset, length in [
        (10 * BLOCK, MiB),                # over a written and an unwritten block
        (700 * BLOCK + 4096, 65536),      # smaller than a block
        (701 * BLOCK - 1000, 65536),      # across a block boundary
        (0, 3 * BLOCK + 512),             # more blocks than the data run has
    ]:
        assert await read(disk, offset, length) == (length, source.expected(offset, length))
    # Short only at the end of the disk.
    assert await read(disk, SIZE - 4096, 8192) == (4096, source.expected(SIZE - 4096, 4096))


async def test_incremental_reports_what_changed_and_reads_it(source: KnownDisk) -> None:
    first = await source.open()
    await asyncio.to_thread(first.close)
    source.write(CHANGED)
    source.zero(ZEROED)
    disk = await source.open()
    extents = disk.extents()
    assert disk.size == SIZE and disk.full_sync_reason == ""
    assert_tiles(disk, extents)
    data, zero = where(extents, zero=False, clean=False), where(extents, zero=True, clean=False)
    for index in CHANGED:
        assert covers(data, index), f"changed block {index} is not reported as data to read"
    for index in ZEROED:
        assert covers(zero, index), f"zeroed block {index} is not reported as a changed zero"
    if disk.tracking != "hash-diff":  # a source with tracking says what did not change
        clean = where(extents, clean=True)
        for index in UNCHANGED:
            assert covers(clean, index), f"unchanged block {index} is not reported clean"
    await assert_reads_the_disk(source, disk, extents)


async def test_close_twice_from_a_worker_thread(source: KnownDisk) -> None:
    disk = await source.open()
    assert await read(disk, 0, BLOCK) == (BLOCK, source.expected(0, BLOCK))
    await asyncio.to_thread(disk.close)  # as the engine closes a source
    await asyncio.to_thread(disk.close)


async def test_read_after_close_is_a_source_error(source: KnownDisk) -> None:
    disk = await source.open()
    await asyncio.to_thread(disk.close)
    with pytest.raises(SourceError):
        await read(disk, 0, BLOCK)
