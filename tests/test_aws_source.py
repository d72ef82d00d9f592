"""The `aws` source against the AWS test peer (moto corrected to the EBS direct APIs'
semantics, tests/peers/aws/): inventory, consistency-group snapshots, and reading
changed blocks, with throttling, connection resets and expiring block tokens."""

from __future__ import annotations

import asyncio
import random

import pytest

from dr_common.aws import AwsSettings, client
from dr_common.errors import SourceError
from dr_common.sources.aws import disk as source
from dr_common.sources.aws import AwsDisk, delete_snapshots, discover, snapshot_group, \
    stale_snapshots
from dr_common.sources.base import Extent
from dr_common import remote as metrics
from tests.helpers.disks import block_content

BLOCK = 524288
MiB = 1 << 20
GiB = 1 << 30
TAGS = {"hybrid-dr:plan": "plan-1"}


class Volume:
    """An EBS volume on the peer and a local model of the bytes written to it."""

    def __init__(self, peer, volume_id: str, size: int):
        self.peer, self.id, self.size = peer, volume_id, size
        self.blocks: dict[int, bytes] = {}
        self.rnd = random.Random(volume_id)

    def write_block(self, index: int) -> None:
        data = self.rnd.randbytes(BLOCK)
        self.peer.write_volume(self.id, index * BLOCK, data)
        self.blocks[index] = data

    def discard_block(self, index: int) -> None:
        self.peer.discard_volume(self.id, index * BLOCK, BLOCK)
        self.blocks.pop(index, None)

    def expected(self, offset: int, length: int) -> bytes:
        return block_content(self.blocks, BLOCK, offset, length)


async def make_instance(aws_settings: AwsSettings, peer, *, name: str = "",
                        data_gib: int = 1) -> tuple[str, str, Volume]:
    """An instance with its root volume and one attached data volume:
    (instance id, root volume id, data volume)."""
    async with client(aws_settings, "ec2") as ec2:
        image = (await ec2.describe_images(Owners=["amazon"]))["Images"][0]["ImageId"]
        tags = [{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}]}] \
            if name else []
        inst = (await ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1,
                                        InstanceType="t3.micro",
                                        TagSpecifications=tags))["Instances"][0]
        iid = inst["InstanceId"]
        root = inst["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
        vol = await ec2.create_volume(Size=data_gib, AvailabilityZone=f"{aws_settings.region}a")
        await ec2.attach_volume(VolumeId=vol["VolumeId"], InstanceId=iid, Device="/dev/sdf")
    return iid, root, Volume(peer, vol["VolumeId"], data_gib * GiB)


def runs(extents: list[Extent]) -> list[tuple[int, int, str]]:
    """Extents as (first block, end block, kind), for readable assertions."""
    def kind(e: Extent) -> str:
        return "zero" if e.zero else "clean" if e.clean else "data"
    return [(e.start // BLOCK, e.end // BLOCK, kind(e)) for e in extents]


async def read(disk: AwsDisk, offset: int, length: int) -> bytes:
    buf = bytearray(length)
    n = await asyncio.to_thread(disk.readinto, offset, memoryview(buf))
    assert n == length
    return bytes(buf)


async def read_data(disk: AwsDisk, chunk: int = MiB) -> dict[int, bytes]:
    """Every data extent in chunk-size pieces, read concurrently from worker threads
    as the engine does: {offset: bytes}."""
    pieces = [(pos, min(chunk, e.end - pos)) for e in disk.extents()
              if not e.zero and not e.clean for pos in range(e.start, e.end, chunk)]
    got = await asyncio.gather(*(read(disk, off, n) for off, n in pieces))
    return {off: data for (off, _n), data in zip(pieces, got)}


def assert_bytes(volume: Volume, got: dict[int, bytes]) -> None:
    for off, data in got.items():
        assert data == volume.expected(off, len(data)), f"bytes differ at {off}"


def throttles() -> float:
    return sum(m.value for metric in metrics.THROTTLES.collect()
               for m in metric.samples if m.labels.get("target") == "ebs-source"
               and m.name.endswith("_total"))


async def snapshot(aws_settings: AwsSettings, iid: str, volume: Volume) -> str:
    snaps = await snapshot_group(aws_settings, {iid: [volume.id]}, tags=TAGS, timeout=30)
    assert set(snaps) == {volume.id}
    return snaps[volume.id]


async def test_discover_lists_instances_with_volumes_root_first(aws_settings, aws_peer):
    iid, root, data = await make_instance(aws_settings, aws_peer, name="web-1", data_gib=2)
    other, _, _ = await make_instance(aws_settings, aws_peer)
    async with client(aws_settings, "ec2") as ec2:
        gone, _, _ = await make_instance(aws_settings, aws_peer)
        await ec2.terminate_instances(InstanceIds=[gone])

    found = {w.id: w for w in await discover(aws_settings)}

    assert set(found) == {iid, other}
    web = found[iid]
    assert web.display_name == "web-1" and found[other].display_name == other
    assert [d.id for d in web.disks] == [root, data.id]
    assert web.disks[1].display_name == f"/dev/sdf ({data.id})"
    assert web.disks[1].locator == data.id and web.disks[1].size == 2 * GiB
    assert {d.cbt for d in web.disks} == {"ebs-direct"}


async def test_snapshot_group_takes_listed_volumes_and_cleans_up(aws_settings, aws_peer):
    iid, root, data = await make_instance(aws_settings, aws_peer)
    snaps = await snapshot_group(aws_settings, {iid: [root, data.id]}, tags=TAGS, timeout=30)
    assert set(snaps) == {root, data.id}
    only_data = await snapshot_group(aws_settings, {iid: [data.id]}, tags=TAGS, timeout=30)
    assert set(only_data) == {data.id}  # the boot volume was excluded

    stale = await stale_snapshots(aws_settings, TAGS)
    assert sorted(stale) == sorted([*snaps.values(), *only_data.values()])
    await delete_snapshots(aws_settings, [*stale, "snap-0123456789abcdef0"])  # one unknown
    assert await stale_snapshots(aws_settings, TAGS) == []


async def test_full_sync_reads_written_blocks_only(aws_settings, aws_peer):
    iid, _, vol = await make_instance(aws_settings, aws_peer)
    written = [0, 1, 2, 10, 700, 2047]
    for index in written:
        vol.write_block(index)
    snap = await snapshot(aws_settings, iid, vol)
    aws_peer.reset_stats()

    disk = await AwsDisk.open(aws_settings, snapshot_id=snap, size=vol.size, volume_id=vol.id)
    try:
        assert disk.full_sync_reason == "first-cycle" and disk.tracking == "changed-blocks"
        assert runs(disk.extents()) == [(0, 3, "data"), (3, 10, "zero"), (10, 11, "data"),
                                        (11, 700, "zero"), (700, 701, "data"),
                                        (701, 2047, "zero"), (2047, 2048, "data")]
        assert_bytes(vol, await read_data(disk))
        # An engine chunk over a written and an unwritten block: zeros, without a fetch.
        assert await read(disk, 10 * BLOCK, MiB) == vol.expected(10 * BLOCK, MiB)
        # Chunks smaller than a block, one of them across a block boundary.
        for off in (700 * BLOCK + 4096, 701 * BLOCK - 1000):
            assert await read(disk, off, 65536) == vol.expected(off, 65536)
    finally:
        await asyncio.to_thread(disk.close)  # as the engine does

    ebs = aws_peer.stats()["ebs"]
    # Each written block once, then blocks 10 and 700 (twice) again; unwritten ones never.
    assert ebs["GetSnapshotBlock"] == len(written) + 3 == disk.blocks_read
    assert ebs["ListSnapshotBlocks"] == 1  # the listing's tokens served every read
    assert disk.bytes_read == (len(written) + 3) * BLOCK


async def test_incremental_reads_only_changed_blocks(aws_settings, aws_peer):
    iid, _, vol = await make_instance(aws_settings, aws_peer)
    for index in (0, 1, 2, 10, 700):
        vol.write_block(index)
    first = await snapshot(aws_settings, iid, vol)
    for index in (1, 11, 1500):  # one overwritten, two new
        vol.write_block(index)
    vol.discard_block(700)  # now reads as zeros: a changed block, but not data
    second = await snapshot(aws_settings, iid, vol)
    aws_peer.reset_stats()

    disk = await AwsDisk.open(aws_settings, snapshot_id=second, previous_snapshot_id=first,
                              size=vol.size, volume_id=vol.id)
    try:
        assert disk.full_sync_reason == ""
        assert runs(disk.extents()) == [(0, 1, "clean"), (1, 2, "data"), (2, 11, "clean"),
                                        (11, 12, "data"), (12, 700, "clean"),
                                        (700, 701, "zero"), (701, 1500, "clean"),
                                        (1500, 1501, "data"), (1501, 2048, "clean")]
        got = await read_data(disk, chunk=BLOCK)
        assert disk.blocks_read == 3
        assert_bytes(vol, got)
        # A 1 MiB engine chunk over an unchanged block (0) and a changed one (1): the
        # unchanged block's token is listed lazily and its real bytes come back.
        assert await read(disk, 0, MiB) == vol.expected(0, MiB)
    finally:
        await disk.aclose()
    ebs = aws_peer.stats()["ebs"]
    assert ebs["ListChangedBlocks"] == 1 and ebs["ListSnapshotBlocks"] == 1
    assert ebs["GetSnapshotBlock"] == 5  # 3 changed, then blocks 0 and 1 again


async def test_previous_snapshot_missing_means_full_sync(aws_settings, aws_peer):
    iid, _, vol = await make_instance(aws_settings, aws_peer)
    vol.write_block(3)
    first = await snapshot(aws_settings, iid, vol)
    vol.write_block(4)
    second = await snapshot(aws_settings, iid, vol)
    await delete_snapshots(aws_settings, [first])

    disk = await AwsDisk.open(aws_settings, snapshot_id=second, previous_snapshot_id=first,
                              size=vol.size, volume_id=vol.id)
    try:
        assert disk.full_sync_reason == "previous-snapshot-missing"
        assert runs(disk.extents()) == [(0, 3, "zero"), (3, 5, "data"), (5, 2048, "zero")]
        assert_bytes(vol, await read_data(disk))
    finally:
        await disk.aclose()


@pytest.mark.parametrize("incremental", [False, True])
async def test_new_snapshot_missing_is_an_error(aws_settings, aws_peer, incremental):
    iid, _, vol = await make_instance(aws_settings, aws_peer)
    vol.write_block(0)
    first = await snapshot(aws_settings, iid, vol)
    second = await snapshot(aws_settings, iid, vol)
    await delete_snapshots(aws_settings, [second])

    with pytest.raises(SourceError) as err:
        await AwsDisk.open(aws_settings, snapshot_id=second, size=vol.size, volume_id=vol.id,
                           previous_snapshot_id=first if incremental else "")
    assert err.value.reason == "snapshot-missing" and not err.value.retryable
    assert second in err.value.message and vol.id in err.value.message


async def test_reads_are_exact_despite_throttling_and_resets(aws_settings, aws_peer):
    iid, _, vol = await make_instance(aws_settings, aws_peer)
    for index in range(0, 80, 2):  # 40 blocks, 20 MiB
        vol.write_block(index)
    snap = await snapshot(aws_settings, iid, vol)
    before = throttles()
    aws_peer.faults(throttle_rate=0.2, reset_rate=0.02, services=["ebs"], seed=7)
    try:
        disk = await AwsDisk.open(aws_settings, snapshot_id=snap, size=vol.size)
        try:
            assert_bytes(vol, await read_data(disk))
        finally:
            await disk.aclose()
    finally:
        aws_peer.clear_faults()
    assert disk.blocks_read == 40
    assert throttles() > before
    assert aws_peer.stats()["faults"]["throttled"] > 0


async def test_expired_tokens_are_listed_again(aws_settings, aws_peer):
    iid, _, vol = await make_instance(aws_settings, aws_peer)
    for index in (5, 6, 900):
        vol.write_block(index)
    snap = await snapshot(aws_settings, iid, vol)
    aws_peer.faults(token_lifetime_seconds=1)
    disk = await AwsDisk.open(aws_settings, snapshot_id=snap, size=vol.size)
    try:
        await asyncio.sleep(1.1)  # token expiry is time itself: wait it out
        aws_peer.reset_stats()
        assert_bytes(vol, await read_data(disk))
    finally:
        await disk.aclose()
    ebs = aws_peer.stats()["ebs"]
    assert ebs["ListSnapshotBlocks"] >= 1  # re-listed before using stale tokens
    assert ebs["GetSnapshotBlock"] == 3  # none refused


async def test_tokens_refused_by_the_service_are_refreshed(aws_settings, aws_peer, monkeypatch):
    """A token the service finds expired before we think it is (our clock runs behind):
    the refusal (ValidationException INVALID_BLOCK_TOKEN) makes us list again and retry."""
    monkeypatch.setattr(source, "refresh_at", lambda expiry, listed_at: float("inf"))
    iid, _, vol = await make_instance(aws_settings, aws_peer)
    for index in (5, 6, 900):
        vol.write_block(index)
    snap = await snapshot(aws_settings, iid, vol)
    aws_peer.faults(token_lifetime_seconds=1)
    disk = await AwsDisk.open(aws_settings, snapshot_id=snap, size=vol.size)
    try:
        await asyncio.sleep(1.1)
        aws_peer.reset_stats()
        assert_bytes(vol, await read_data(disk))
    finally:
        await disk.aclose()
    ebs = aws_peer.stats()["ebs"]
    assert ebs["GetSnapshotBlock"] > 3 and ebs["ListSnapshotBlocks"] >= 1
    assert disk.blocks_read == 3


async def test_checksum_mismatch_is_fetched_again_then_fails(aws_settings, aws_peer, monkeypatch):
    """A block whose bytes do not match the service's checksum (a bad transfer) is
    fetched again; one that never matches fails the read as a retryable corrupt-block."""
    iid, _, vol = await make_instance(aws_settings, aws_peer)
    vol.write_block(7)
    snap = await snapshot(aws_settings, iid, vol)
    real = source._sha256_b64
    bad = iter([True])  # the first check sees corrupt bytes, later ones the real ones
    monkeypatch.setattr(source, "_sha256_b64", lambda data: "bad" if next(bad, False)
                        else real(data))
    disk = await AwsDisk.open(aws_settings, snapshot_id=snap, size=vol.size)
    try:
        assert await read(disk, 7 * BLOCK, BLOCK) == vol.blocks[7]
        assert disk.blocks_read == 2
        monkeypatch.setattr(source, "_sha256_b64", lambda data: "bad")
        with pytest.raises(SourceError) as err:
            await read(disk, 7 * BLOCK, BLOCK)
        assert err.value.reason == "corrupt-block" and err.value.retryable
    finally:
        await disk.aclose()
