"""Paired nodes in one process: a source node's engine with a RemoteSink, streaming over
real gRPC (loopback, TLS where it matters) to a TransferServicer writing a repository.

Restores compare bytes with the source; flow-control tests check the credits at both
ends; resume tests count what was sent twice.
"""

from __future__ import annotations

import asyncio
import os

import grpc
import pytest

from dr_common import tls
from dr_common.errors import DRError
from dr_common.proto.dr.v1 import nodes_pb2, transfer_pb2
from dr_common.repository import FsStore, Repository
from dr_common.sources.file import FileDisk
from dr_common import targets
from dr_common.targets.image import restore_raw
from dr_common.targets.repository import RepositoryTarget
from dr_node.config import EngineConfig, NodeConfig, TransferConfig
from dr_node.engine import Engine
from dr_node.transfer.client import Pairs, RemoteSink
from dr_node.transfer.server import TransferServicer, start_server
from tests.helpers.disks import MiB, make_disk
from tests.helpers.engines import Instrumented


def _config(root, budget_bytes=EngineConfig.budget_bytes, **transfer) -> NodeConfig:
    return NodeConfig(file_roots=[str(root)],
                      engine=EngineConfig(workers=2, budget_bytes=budget_bytes),
                      transfer=TransferConfig(listen="127.0.0.1:0", **transfer))


class Target:
    """A target node's TransferService, its repository wrapped by `Instrumented`."""

    def __init__(self, root, *, delay=0.0, tls_files=None, **transfer):
        self.root = root
        self.delay = delay
        self.stores: list[Instrumented] = []
        cfg = _config(root, **transfer)
        if tls_files:
            cfg = NodeConfig(**{**cfg.__dict__, **tls_files})
        self.config = cfg
        self.engine = Engine(cfg.engine)
        self.servicer = TransferServicer(cfg, self.engine, open_target=self._open)

    async def _open(self, locator, env):
        repo = (await targets.open_target(locator, env)).repository
        store = Instrumented(repo.store, delay=self.delay)
        self.stores.append(store)
        return RepositoryTarget(Repository(store, repo.id, repo.chunk_id_key()),
                                name=f"fs:{locator.fs.path}", env=env)

    async def start(self, port: int = 0):
        cfg = self.config
        if port:
            cfg = NodeConfig(**{**cfg.__dict__, "transfer": TransferConfig(
                **{**cfg.transfer.__dict__, "listen": f"127.0.0.1:{port}"})})
        self.server, self.port = await start_server(cfg, self.engine, self.servicer)
        return self

    async def stop(self, grace=None):
        await self.server.stop(grace)

    def chunk_puts(self) -> int:
        return sum(len(s.chunk_puts) for s in self.stores)


class Source:
    def __init__(self, root, **cfg):
        self.config = NodeConfig(file_roots=[str(root)], engine=EngineConfig(workers=2),
                                 **cfg)
        self.engine = Engine(self.config.engine)
        self.pairs = Pairs(self.config)
        self.sinks: list[RemoteSink] = []

    async def replicate(self, disk_path, port, repo_path, *, previous="", checkpoint=None,
                        progress=None, compression="none", node="nodes/t1", chunk=MiB,
                        tls_name=""):
        size = os.path.getsize(disk_path)
        sink = RemoteSink(self.pairs, node=node, address=f"127.0.0.1:{port}",
                          tls_name=tls_name,
                          connect_timeout=10, open_disk=transfer_pb2.OpenDisk(
                              task="tasks/1", lease_token=1, disk="d1",
                              target=nodes_pb2.TargetLocator(
                                  fs=nodes_pb2.FsTarget(path=repo_path)),
                              size_bytes=size, chunk_size_bytes=chunk,
                              compression=compression, previous_root_hash=previous))
        self.sinks.append(sink)
        async with sink:
            with FileDisk(disk_path) as src:
                return await self.engine.replicate(
                    disk="d1", source=src, sink=sink, chunk_size=chunk,
                    checkpoint=checkpoint, checkpoint_interval=8 * MiB, window=80,
                    progress=progress or (lambda *a: asyncio.sleep(0)))

    async def close(self):
        await self.pairs.close()
        self.engine.close()


async def _dr_error(coro) -> DRError:
    """The DRError a replication failed with (the engine's task groups wrap it)."""
    try:
        await coro
    except BaseException as exc:  # noqa: BLE001
        while isinstance(exc, BaseExceptionGroup):
            exc = exc.exceptions[0]
        assert isinstance(exc, DRError), repr(exc)
        return exc
    raise AssertionError("the replication did not fail")


async def _restore(repo_path, root_hash, dest, engine) -> bytes:
    repo = await Repository.open(FsStore(str(repo_path)))
    await restore_raw(repo=repo, root_hash=root_hash, disk="d1", destination=str(dest),
                      overwrite=True, roots=[str(dest.parent)], pool=engine.pool,
                      budget=engine.budget, window=8, progress=lambda *a: asyncio.sleep(0))
    return dest.read_bytes()


def _scribble(path, offsets, marker=b"changed!") -> None:
    with open(path, "r+b") as f:
        for off in offsets:
            f.seek(off)
            f.write(marker * 512)


async def test_full_then_incremental_restore_bit_identical(tmp_path):
    disk, repo = tmp_path / "src.img", tmp_path / "repo"
    make_disk(disk, 64 * MiB, [(0, 40 * MiB), (48 * MiB, 8 * MiB)])
    target = await Target(tmp_path).start()
    source = Source(tmp_path)
    try:
        full = await source.replicate(disk, target.port, str(repo), compression="zstd")
        assert full.full_sync and full.root_hash
        assert full.stats.chunks_stored == 48 and full.stats.chunks_zero == 16
        assert (await _restore(repo, full.root_hash, tmp_path / "r1.img", target.engine)
                == disk.read_bytes())

        _scribble(disk, [3 * MiB + 5, 50 * MiB])  # 2 chunks change
        incr = await source.replicate(disk, target.port, str(repo), compression="zstd",
                                      previous=full.root_hash)
        assert not incr.full_sync
        assert incr.stats.chunks_sent == 2 and incr.stats.chunks_unchanged == 46
        assert (await _restore(repo, incr.root_hash, tmp_path / "r2.img", target.engine)
                == disk.read_bytes())
        # The first point is untouched by the second.
        assert (await _restore(repo, full.root_hash, tmp_path / "r3.img", target.engine)
                != disk.read_bytes())
    finally:
        await source.close()
        await target.stop()


async def test_slow_target_paces_the_source_within_its_credits(tmp_path):
    """The target writes slowly: the source waits for credits, never has more in flight
    than granted (checked by the target on every chunk, and by the source's gate), and
    the target never holds more than its largest window."""
    disk, repo = tmp_path / "src.img", tmp_path / "repo"
    make_disk(disk, 48 * MiB, [(0, 48 * MiB)])
    window = 4 * (MiB + 1)
    target = await Target(tmp_path, delay=0.05, window_bytes=window,
                          min_window_bytes=2 * (MiB + 1), max_window_bytes=window).start()
    source = Source(tmp_path)
    try:
        res = await source.replicate(disk, target.port, str(repo))
        gate = source.sinks[0].gate
        assert gate.waits > 0  # the credits, not the engine's window (80), set the pace
        assert gate.peak_inflight <= window
        assert gate.sent <= gate.limit
        assert 0 < target.servicer.peak_outstanding <= window
        assert max(s.peak_inflight for s in target.stores) <= window
        assert (await _restore(repo, res.root_hash, tmp_path / "r.img", target.engine)
                == disk.read_bytes())
    finally:
        await source.close()
        await target.stop()


async def test_credits_stay_within_the_target_nodes_byte_budget(tmp_path):
    """A target node whose byte budget (6 MiB) is below its window (32 MiB) grants no
    more than the budget: the source's in-flight bytes stay under it."""
    disk, repo = tmp_path / "src.img", tmp_path / "repo"
    make_disk(disk, 32 * MiB, [(0, 32 * MiB)])
    budget = 6 * MiB
    target = await Target(tmp_path, delay=0.02, budget_bytes=budget).start()
    source = Source(tmp_path)
    try:
        res = await source.replicate(disk, target.port, str(repo))
        gate = source.sinks[0].gate
        assert gate.waits > 0 and gate.peak_inflight <= budget
        assert target.servicer.peak_outstanding <= budget
        assert target.engine.budget.peak <= budget
        assert (await _restore(repo, res.root_hash, tmp_path / "r.img", target.engine)
                == disk.read_bytes())
    finally:
        await source.close()
        await target.stop()


def test_a_streams_credits_follow_its_share_of_the_budget():
    """Grants extend to completed + min(window, share), at least one chunk; never back."""
    from dr_node.transfer.credits import CreditWindow
    share = [8 * MiB]
    w = CreditWindow("t", chunk_bytes=MiB, window_bytes=32 * MiB, min_window_bytes=16 * MiB,
                     max_window_bytes=64 * MiB, share=lambda: share[0])
    assert w.limit == 8 * MiB
    w.receive(MiB)
    assert w.complete(MiB, latency=0.01) == 9 * MiB
    share[0] = 2 * MiB  # more streams opened: a smaller share; the old grant stands
    w.receive(MiB)
    assert w.complete(MiB, latency=0.01) == 9 * MiB
    share[0] = 0  # an exhausted budget still lets one chunk through
    for _ in range(7):
        w.receive(MiB)
        w.complete(MiB, latency=0.01)
    assert w.limit == 10 * MiB


async def test_target_killed_mid_disk_resumes_sending_at_most_one_window_twice(tmp_path):
    disk, repo = tmp_path / "src.img", tmp_path / "repo"
    make_disk(disk, 64 * MiB, [(0, 64 * MiB)])
    window = 4 * (MiB + 1)
    target = await Target(tmp_path, delay=0.01, window_bytes=window,
                          min_window_bytes=window, max_window_bytes=window).start()
    source = Source(tmp_path)
    checkpoints = []
    killed = asyncio.Event()

    async def progress(cp, done, stats, full):
        if cp is not None:
            checkpoints.append(cp)
        if done >= 30 * MiB and not killed.is_set():
            killed.set()
            await target.stop()  # the target node dies: every stream breaks

    try:
        err = await _dr_error(source.replicate(disk, target.port, str(repo),
                                               progress=progress))
        assert err.reason in ("pair-disconnected", "pair-unavailable") and err.retryable
        first_run = source.sinks[0].gate.sent // (MiB + 1)  # random data: raw chunks
        assert checkpoints and first_run < 64

        port = target.port
        target = await Target(tmp_path, window_bytes=window, min_window_bytes=window,
                              max_window_bytes=window).start(port)
        res = await source.replicate(disk, port, str(repo), checkpoint=checkpoints[-1])
        second_run = source.sinks[1].gate.sent // (MiB + 1)
        # Every chunk crossed the wire at least once; at most one window (the 4 chunks
        # of credits in flight when the target died) crossed it twice.
        assert 64 <= first_run + second_run <= 64 + 4
        assert (await _restore(repo, res.root_hash, tmp_path / "r.img", target.engine)
                == disk.read_bytes())
    finally:
        await source.close()
        await target.stop()


async def test_unknown_target_kind_is_refused_with_a_clear_error(tmp_path):
    disk = tmp_path / "src.img"
    make_disk(disk, 4 * MiB, [(0, 4 * MiB)])
    target = await Target(tmp_path).start()
    source = Source(tmp_path)
    try:
        sink = RemoteSink(source.pairs, node="nodes/t1", address=f"127.0.0.1:{target.port}",
                          connect_timeout=10, open_disk=transfer_pb2.OpenDisk(
                              task="tasks/1", lease_token=1, disk="d1",
                              target=nodes_pb2.TargetLocator(ebs=nodes_pb2.EbsTarget()),
                              size_bytes=4 * MiB, chunk_size_bytes=MiB))
        with pytest.raises(DRError) as info:
            async with sink:
                await sink.begin(None)
        assert info.value.reason == "invalid-argument"
        assert "written by the source node directly" in info.value.message
        assert not info.value.retryable
    finally:
        await source.close()
        await target.stop()


async def test_unreachable_pair_fails_after_the_connect_timeout(tmp_path):
    source = Source(tmp_path)
    sink = RemoteSink(source.pairs, node="nodes/t1", address="127.0.0.1:1", connect_timeout=0.5,
                      open_disk=transfer_pb2.OpenDisk(task="tasks/1", lease_token=1, disk="d1"))
    try:
        with pytest.raises(DRError) as info:
            async with sink:
                await sink.begin(None)
        assert info.value.reason == "pair-unavailable" and info.value.retryable
        assert "did not answer within 0.5 s" in info.value.message
    finally:
        await source.close()


def _certs(directory, *nodes):
    tls.init_dir(directory, server_names=["localhost"], nodes=list(nodes))
    return {n: {"tls_ca_file": str(directory / tls.CA_CERT),
                "tls_cert_file": str(directory / f"{n}.pem"),
                "tls_key_file": str(directory / f"{n}-key.pem")} for n in nodes}


async def test_mutual_tls_pair_and_other_ca_refused(tmp_path):
    disk, repo = tmp_path / "src.img", tmp_path / "repo"
    make_disk(disk, 8 * MiB, [(0, 8 * MiB)])
    ours = _certs(tmp_path / "ca", "s1", "t1")
    other = _certs(tmp_path / "other-ca", "s1")
    target = await Target(tmp_path, tls_files=ours["t1"]).start()
    good, rogue = Source(tmp_path, **ours["s1"]), Source(tmp_path, **other["s1"])
    wrong_name = Source(tmp_path, **ours["s1"])
    try:
        res = await good.replicate(disk, target.port, str(repo), node="nodes/t1")
        assert (await _restore(repo, res.root_hash, tmp_path / "r.img", target.engine)
                == disk.read_bytes())
        puts = target.chunk_puts()
        # A node of another CA: the handshake fails, nothing is written.
        err = await _dr_error(rogue.replicate(disk, target.port, str(repo) + "2",
                                              node="nodes/t1"))
        assert err.reason in ("pair-unavailable", "pair-disconnected"), err.message
        # Our CA, but the target is not the node the control plane named.
        err = await _dr_error(wrong_name.replicate(disk, target.port, str(repo) + "3",
                                                   node="nodes/t9"))
        assert err.reason in ("pair-unavailable", "pair-disconnected"), err.message
        assert target.chunk_puts() == puts
        assert not (tmp_path / "repo2").exists() and not (tmp_path / "repo3").exists()
    finally:
        for s in (good, rogue, wrong_name):
            await s.close()
        await target.stop()


async def test_shared_prefix_certificate_pairs_by_the_name_the_control_plane_saw(tmp_path):
    """Pods sharing one certificate (CN = SAN = a prefix of their node ids, as the Helm
    chart's nodes do): the source checks the name the control plane authenticated the
    target by, not the node id; another name is still refused."""
    disk, repo = tmp_path / "src.img", tmp_path / "repo"
    make_disk(disk, 8 * MiB, [(0, 8 * MiB)])
    ours = _certs(tmp_path / "ca", "s1", "nodes-pool")
    target = await Target(tmp_path, tls_files=ours["nodes-pool"]).start()
    good = Source(tmp_path, **ours["s1"])
    by_id, wrong_name = Source(tmp_path, **ours["s1"]), Source(tmp_path, **ours["s1"])
    try:
        res = await good.replicate(disk, target.port, str(repo), node="nodes/nodes-pool-a1",
                                   tls_name="nodes-pool")
        assert (await _restore(repo, res.root_hash, tmp_path / "r.img", target.engine)
                == disk.read_bytes())
        puts = target.chunk_puts()
        # No name given: the node id, which the shared certificate does not bear.
        err = await _dr_error(by_id.replicate(disk, target.port, str(repo) + "2",
                                              node="nodes/nodes-pool-a1"))
        assert err.reason in ("pair-unavailable", "pair-disconnected"), err.message
        err = await _dr_error(wrong_name.replicate(disk, target.port, str(repo) + "3",
                                                   node="nodes/nodes-pool-a1",
                                                   tls_name="nodes-other"))
        assert err.reason in ("pair-unavailable", "pair-disconnected"), err.message
        assert target.chunk_puts() == puts
        assert not (tmp_path / "repo2").exists() and not (tmp_path / "repo3").exists()
    finally:
        for s in (good, by_id, wrong_name):
            await s.close()
        await target.stop()


def test_node_certificate_names_the_node_for_both_ends(tmp_path):
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID
    _certs(tmp_path, "t1")
    cert = x509.load_pem_x509_certificate((tmp_path / "t1.pem").read_bytes())
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages and ExtendedKeyUsageOID.CLIENT_AUTH in usages
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["t1"]
    assert grpc  # imported for the channel options the client sets


async def test_chunk_damaged_on_the_wire_is_rejected_and_sent_again(tmp_path):
    """A byte flipped between the nodes (by a WAN proxy, on a plaintext pair: over TLS
    the record check would break the connection instead) fails the target's hash check;
    the chunk is sent again and the point restores bit-identical."""
    from bench.wanproxy import WanProxy
    disk, repo = tmp_path / "src.img", tmp_path / "repo"
    make_disk(disk, 16 * MiB, [(0, 16 * MiB)])
    marker = b"\x8fHYBRID-DR-FLIP\x01"
    with open(disk, "r+b") as f:  # many copies: HTTP/2 framing may split one of them
        f.seek(5 * MiB + 4096)
        f.write(marker * 256)
    target = await Target(tmp_path).start()
    source = Source(tmp_path)
    try:
        async with WanProxy("127.0.0.1", target.port, rtt=0.01) as proxy:
            proxy.corrupt(marker, count=1)
            res = await source.replicate(disk, proxy.port, str(repo))
            assert proxy.corruptions == 1
        stats = source.pairs.stats("nodes/t1", f"127.0.0.1:{proxy.port}")
        assert stats.errors == 1  # the one rejection
        assert source.sinks[0].gate.sent == 17 * (MiB + 1)  # 16 chunks, one of them twice
        assert (await _restore(repo, res.root_hash, tmp_path / "r.img", target.engine)
                == disk.read_bytes())
    finally:
        await source.close()
        await target.stop()
