"""The target contract: one suite run against every target — fs, s3 (moto), ebs (moto),
azblob (Azurite), azure-disk (the Azure peer) and paired (a target node's TransferService
writing an fs repository) — as restic runs
one suite over every backend (internal/backend/test/suite.go).

What every target must do, through the Target interface and the engine alone:
- a full cycle of a disk, finalized, reads back equal to the disk;
- an incremental cycle after a change, relative to the first point, reads back equal to
  the changed disk, and stores no more than the first (a repository, which compares
  chunk ids, stores less; an EBS snapshot from a source read in full is written whole);
- deleting a point twice is harmless.
A new target joins by adding one `Case` to CASES.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from dr_common import targets
from dr_common.aws import AwsSettings
from dr_common.proto.dr.v1 import common_pb2, nodes_pb2, transfer_pb2
from dr_common.sources.aws import AwsDisk
from dr_common.sources.file import FileDisk
from dr_common.targets.base import SinkRequest
from dr_node.config import EngineConfig, NodeConfig, TransferConfig
from dr_node.engine import Engine
from dr_node.transfer.client import Pairs, RemoteSink
from dr_node.transfer.server import start_server
from tests.helpers.disks import MiB, make_disk, write_at

SIZE = 1 << 30  # EBS sizes are whole GiB; sparse, so only the data below is written
DATA = [(0, 4 * MiB), (300 * MiB, 2 * MiB), (SIZE - MiB, MiB)]
CHUNK = 512 * 1024  # EBS's block; the repository takes any


@dataclass
class Case:
    """One target under test: its locator, and how a disk is read back from a point."""

    kind: str
    loc: nodes_pb2.TargetLocator
    engine: Engine
    roots: tuple[str, ...]
    settings: AwsSettings | None = None
    # A snapshot target's point read back through its service: (snapshot id, size) ->
    # the disk's bytes.
    read_snapshot: Callable[[str, int], Awaitable[bytes]] | None = None
    pair: tuple | None = None  # (Pairs, address) for the paired case
    cleanup: list = field(default_factory=list)

    async def replicate(self, target, disk_path, *, previous=None, cycle=1):
        prev = previous or {}
        with FileDisk(disk_path) as src:
            # A changed-block source would say what is clean; a file source reads all.
            request = SinkRequest(plan="plans/p", cycle=f"plans/p/cycles/{cycle}", disk="d1",
                                  size=src.size, chunk_size=CHUNK,
                                  previous_root_hash=prev.get("root_hash", ""),
                                  previous_snapshot_id=prev.get("snapshot_id", ""),
                                  source_tracked=False)
            if self.pair is None:
                sink = await target.sink(request)
                return await self.engine.replicate(disk="d1", source=src, sink=sink,
                                                   chunk_size=CHUNK)
            pairs, address = self.pair
            async with RemoteSink(pairs, node="nodes/t1", address=address, connect_timeout=10,
                                  open_disk=transfer_pb2.OpenDisk(
                                      task="tasks/1", lease_token=1, disk="d1",
                                      target=self.loc, size_bytes=src.size,
                                      chunk_size_bytes=CHUNK,
                                      previous_root_hash=request.previous_root_hash)) as sink:
                return await self.engine.replicate(disk="d1", source=src, sink=sink,
                                                   chunk_size=CHUNK, window=16)

    async def read_back(self, target, result, dest) -> bytes:
        if result.snapshot_id:  # a native snapshot: read it through its service
            assert self.read_snapshot is not None
            return await self.read_snapshot(result.snapshot_id, result.size)

        async def progress(done, total):
            await asyncio.sleep(0)

        await target.restore(nodes_pb2.RestoreSpec(root_hash=result.root_hash, disk="d1",
                                                   destination_path=str(dest), format="raw",
                                                   overwrite=True), progress)
        return dest.read_bytes()


def _aws(request) -> tuple[AwsSettings, common_pb2.SiteSettings]:
    settings = request.getfixturevalue("aws_settings")
    return settings, common_pb2.SiteSettings(aws=common_pb2.AwsSettings(**settings.as_dict()))


async def _case(kind: str, request, tmp_path) -> Case:
    engine = Engine(EngineConfig(window_chunks=16, workers=2))
    roots = (str(tmp_path),)
    if kind in ("fs", "paired"):
        case = Case(kind, targets.locator("fs", str(tmp_path / "repo")), engine, roots)
        if kind == "paired":
            cfg = NodeConfig(file_roots=list(roots), engine=EngineConfig(workers=2),
                             transfer=TransferConfig(listen="127.0.0.1:0"))
            target_engine = Engine(cfg.engine)
            server, port = await start_server(cfg, target_engine)
            pairs = Pairs(NodeConfig(file_roots=list(roots)))
            case.pair = (pairs, f"127.0.0.1:{port}")
            case.cleanup += [pairs.close, lambda: server.stop(None), target_engine.close]
        return case
    if kind == "azure-disk":
        return _azure_disk(request, engine, roots)
    if kind == "azblob":
        from tests.helpers.azblob import azurite_settings
        azure = azurite_settings(request.getfixturevalue("azurite").endpoint)
        loc = targets.locator(kind, f"azblob://{request.getfixturevalue('azure_container')}/repo")
        loc.site.azure.CopyFrom(common_pb2.AzureSettings(**azure.as_dict()))
        return Case(kind, loc, engine, roots)
    settings, site = _aws(request)
    if kind == "s3":
        bucket = f"dr-contract-{uuid.uuid4().hex[:10]}"
        request.getfixturevalue("boto")("s3").create_bucket(Bucket=bucket)
        loc = targets.locator("s3", f"s3://{bucket}/repo")
    else:
        loc = targets.locator(kind, "")
    loc.site.CopyFrom(site)

    async def read_ebs(snapshot_id: str, size: int) -> bytes:
        """Through the EBS direct APIs (the aws source)."""
        disk = await AwsDisk.open(settings, snapshot_id=snapshot_id, size=size)
        try:
            buf = bytearray(size)
            for e in disk.extents():
                if not e.zero:
                    await asyncio.to_thread(disk.readinto, e.start, memoryview(buf)[e.start:e.end])
            return bytes(buf)
        finally:
            await disk.aclose()
    return Case(kind, loc, engine, roots, settings=settings, read_snapshot=read_ebs)


def _azure_disk(request, engine: Engine, roots: tuple[str, ...]) -> Case:
    from azure.storage.blob import BlobServiceClient

    from dr_common.azure import AzureSettings
    from dr_common.targets.azure_disk import parse_snapshot_ref
    from tests.peers.azure.azurite import ACCOUNT_KEY
    peer = request.getfixturevalue("azure_peer")
    settings = AzureSettings(
        subscription_id=peer.subscription_id, resource_groups=(peer.recovery_group,),
        location=peer.location, tenant_id=peer.tenant_id, client_id=peer.client_id,
        client_secret=peer.client_secret, arm_endpoint=peer.arm_endpoint,
        authority_host=peer.authority_host, ca_file=str(peer.ca_file),
        storage_account_url=peer.blob_endpoint, storage_account_key=ACCOUNT_KEY)
    loc = targets.locator("azure-disk", f"azblob://replicas-{uuid.uuid4().hex[:8]}/p")
    loc.site.CopyFrom(common_pb2.SiteSettings(azure=common_pb2.AzureSettings(
        **settings.as_dict())))

    async def read_blob_snapshot(ref: str, size: int) -> bytes:
        container, blob, snapshot = parse_snapshot_ref(ref)
        service = BlobServiceClient.from_connection_string(peer.connection_string)
        client = service.get_blob_client(container, blob, snapshot=snapshot)

        def read() -> bytes:  # the valid pages; the rest reads as zeros
            buf = bytearray(size)
            for r in client.list_page_ranges():
                end = min(r.end + 1, size)
                if r.start < end:
                    buf[r.start:end] = client.download_blob(
                        offset=r.start, length=end - r.start).readall()
            return bytes(buf)
        return await asyncio.to_thread(read)
    return Case("azure-disk", loc, engine, roots, read_snapshot=read_blob_snapshot)


CASES = ["fs", "s3", "azblob", "ebs", "azure-disk", "paired"]


@pytest.fixture(params=CASES)
async def target_case(request, tmp_path):
    case = await _case(request.param, request, tmp_path)
    yield case
    for fn in case.cleanup:
        out = fn()
        if asyncio.iscoroutine(out):
            await out
    case.engine.close()


async def test_full_then_incremental_points_read_back_equal_to_the_disk(target_case, tmp_path):
    case = target_case
    disk = tmp_path / "disk.img"
    make_disk(disk, SIZE, DATA)
    env = case.engine.target_env(case.roots)
    async with targets.opened(case.loc, env) as target:
        first = await case.replicate(target, disk)
        assert first.size == SIZE
        assert await target.finalize(nodes_pb2.FinalizeSpec(
            plan="plans/p", cycle="plans/p/cycles/1", recovery_point_id="p1",
            disks=[nodes_pb2.FinalizeDisk(disk="d1", root_hash=first.root_hash,
                                          size_bytes=SIZE, snapshot_id=first.snapshot_id)]))
        assert await case.read_back(target, first, tmp_path / "r1.img") == disk.read_bytes()

        write_at(disk, 300 * MiB + 4096, os.urandom(8192))  # one chunk changes
        second = await case.replicate(target, disk, cycle=2, previous={
            "root_hash": first.root_hash, "snapshot_id": first.snapshot_id})
        assert await case.read_back(target, second, tmp_path / "r2.img") == disk.read_bytes()
        # Data stored: a replica target also clears the chunks read as zeros (they may
        # hold old data), which count as stored but carry none.
        data = min(second.stats.chunks_stored, second.stats.chunks_read)
        assert 0 < data <= first.stats.chunks_stored
        if case.kind == "paired" or targets.kind(case.kind).repository:
            assert second.stats.chunks_stored < first.stats.chunks_stored

        spec = nodes_pb2.DeleteSpec(recovery_point="plans/p/recoveryPoints/p1",
                                    recovery_point_id="p1",
                                    snapshot_ids=[first.snapshot_id] if first.snapshot_id
                                    else [])
        await target.delete(spec)
        await target.delete(spec)  # idempotent: a retried delete finds nothing left


async def test_an_unknown_target_kind_is_a_clear_error(tmp_path):
    with pytest.raises(Exception) as e:
        await targets.open_target(nodes_pb2.TargetLocator(), targets.base.TargetEnv())
    assert getattr(e.value, "field", "") == "target"
