"""The final cycle of a migration stops the source workloads first (SnapshotSpec
stop_workloads): a running kvm guest is paused before its point is taken and stays
paused, so the point holds every file the guest had fsynced when it was stopped, and a
second point taken after it changes nothing; stopping twice is fine. Kinds that cannot
stop their workloads are refused in the control plane, with a message saying what to do.

The guest tests run the tiny guest (tests/peers/kvm) under TCG, through QMP and through
libvirt's suspend (the libvirtd of tests/test_kvm_libvirt.py); the QMP one runs the
node's snapshot task handler itself (stop, then the point) and reads its log."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import structlog.testing

from dr_common import sources
from dr_common.errors import FailedPrecondition
from dr_common.proto.dr.v1 import nodes_pb2
from dr_common.sources import kvm, kvm_libvirt, kvm_live
from dr_common.sources.base import SourceEnv
from dr_node.tasks import snapshot as snapshot_task
from tests.peers.kvm.check import check_point
from tests.peers.kvm.guest import Guest, make_disk, require_guest
from tests.peers.tools import require_qemu
# The libvirt suite's own libvirtd, and its way to boot and read the guest.
from tests.test_kvm_libvirt import Libvirtd, _boot, require_libvirt
from tests.test_kvm_libvirt import _read as _libvirt_read
from tools.localcluster import wait_for

KIB = 64  # the guest's file size
PREFIX = "hdr-p1-"


# --- which kinds can stop their workloads (control plane) ----------------------------------

@pytest.mark.parametrize("kind", ["aws", "azure", "vsphere"])
def test_a_kind_that_cannot_stop_its_workloads_is_refused_with_what_to_do(kind):
    assert not sources.kind(kind).stops_workloads
    with pytest.raises(FailedPrecondition) as e:
        sources.check_stops_workloads(kind)
    assert e.value.message == (
        f"sites of kind {kind} cannot stop their workloads for a migration yet; stop "
        f"them yourself and use failover from a point taken after")
    assert e.value.reason == "failed-precondition" and not e.value.retryable


@pytest.mark.parametrize("kind", ["file", "kvm"])
def test_file_and_kvm_sites_can_stop_their_workloads(kind):
    assert sources.kind(kind).stops_workloads
    sources.check_stops_workloads(kind)  # no error


def test_every_kind_that_stops_workloads_has_the_function():
    for k in (k for k in sources.KINDS.values() if k.stops_workloads):
        module = sources.REGISTRY.module(k.name, field="source")
        assert callable(getattr(module, "stop_workloads", None)), k.name


def test_a_node_refuses_to_stop_the_workloads_of_a_kind_that_cannot():
    spec = nodes_pb2.SnapshotSpec(plan="plans/p1", cycle="plans/p1/cycles/1",
                                  stop_workloads=True)
    spec.source.aws.SetInParent()
    with pytest.raises(FailedPrecondition, match="kind aws cannot stop"):
        asyncio.run(sources.stop_workloads(spec, SourceEnv(roots=("/",))))


def test_images_at_rest_have_nothing_to_stop(tmp_path):
    image = tmp_path / "idle.qcow2"
    spec = nodes_pb2.SnapshotSpec(plan="plans/p1", cycle="plans/p1/cycles/1", disks=[
        nodes_pb2.SnapshotDisk(disk="idle/idle", workload="idle", locator=str(image))])
    for kind in ("kvm", "file"):
        getattr(spec.source, kind).SetInParent()
        assert asyncio.run(sources.stop_workloads(spec, SourceEnv(roots=(str(tmp_path),)))) \
            == []


async def test_start_cycle_asks_the_snapshot_task_to_stop_or_refuses_before_queuing(tmp_path):
    """The control plane's side: a kind that cannot stop queues nothing; kvm's snapshot
    task carries the flag; file (no snapshot task) queues its cycle as usual."""
    from sqlalchemy import select

    from dr_control.db.models import Cycle, Plan, Site, Task
    from dr_control.services.cycles import fail_cycle, start_cycle
    from dr_control.services.taskspecs import load
    from tests.helpers.services import service_context, two_disk_plan

    async with service_context(f"sqlite+aiosqlite:///{tmp_path}/c.db", tmp_path) as ctx:
        await two_disk_plan(ctx, tmp_path)

        async def start(kind: str):
            async with ctx.db() as s, s.begin():
                (await s.get(Site, "src")).kind = kind  # the plan's source, as that kind
                cycle = await start_cycle(ctx, s, await s.get(Plan, "p"), stop_workloads=True)
                tasks = (await s.scalars(select(Task).where(Task.cycle_id == cycle.id))).all()
                kinds = sorted(t.kind for t in tasks)
                specs = [load(t) for t in tasks if t.kind == "snapshot"]
                await fail_cycle(s, cycle, "test", "the next case")
                return kinds, specs

        with pytest.raises(FailedPrecondition, match="kind aws cannot stop"):
            await start("aws")
        async with ctx.db() as s:
            assert (await s.scalars(select(Cycle))).all() == []
        kinds, [snapshot] = await start("kvm")
        assert kinds == ["snapshot"] and snapshot.stop_workloads
        kinds, specs = await start("file")
        assert kinds == ["replicate", "replicate"] and specs == []


# --- a running guest over QMP ----------------------------------------------------------------

def _read(disk, into: Path) -> None:
    """The point's content, written to a raw image (a full read: a first cycle)."""
    with open(into, "wb") as out:
        out.truncate(disk.size)
        for e in disk.extents():
            if e.zero or e.clean:
                continue
            buf = bytearray(e.length)
            disk.readinto(e.start, memoryview(buf))
            out.seek(e.start)
            out.write(buf)


@pytest.mark.e2e
def test_a_running_guest_is_paused_before_its_point_and_left_paused(tmp_path):
    require_qemu()
    require_guest()
    env = SourceEnv(roots=(str(tmp_path),))
    guest = Guest([make_disk(tmp_path / "vm1-a.qcow2")], tmp_path / "guest",
                  qmp_socket=tmp_path / "vm1.qmp", rate=10, kib=KIB)
    with guest:
        disks = [nodes_pb2.SnapshotDisk(disk=f"{w.id}/{d.id}", workload=w.id,
                                        locator=d.locator)
                 for w in kvm.discover(tmp_path) for d in w.disks]
        assert [d.disk for d in disks] == ["vm1/vd0"]

        def spec(n: int, keep=()) -> nodes_pb2.SnapshotSpec:
            s = nodes_pb2.SnapshotSpec(plan="plans/p1", cycle=f"plans/p1/cycles/{n}",
                                       disks=disks, keep_snapshot_ids=keep,
                                       stop_workloads=True)
            s.source.kvm.SetInParent()
            return s

        wait_for(lambda: guest.count() >= 3, timeout=60, what="the guest writing")
        fsynced = guest.count()  # the last file the guest synced before the stop
        # Point 1 by the node's snapshot task: it stops the VM, then takes the point.
        task = SimpleNamespace(spec=spec(1), source_env=env,
                               result=nodes_pb2.CompleteTaskRequest())
        with structlog.testing.capture_logs() as logs:
            asyncio.run(snapshot_task.run(task))
        socket, _ = kvm_live.parse_locator(disks[0].locator)
        [logged] = [e for e in logs if e["event"] == "workloads stopped before the snapshot"]
        assert logged["stopped"] == [f"{socket}: paused (was running)"]
        assert guest.qmp("query-status")["status"] == "paused"
        # Stopping again (a retried snapshot task) is fine, and says so.
        assert asyncio.run(sources.stop_workloads(spec(1), env)) == \
            [f"{socket}: paused (was paused)"]
        assert guest.qmp("query-status")["status"] == "paused"

        snaps = list(task.result.source_snapshots)
        for n in (1, 2):
            if n == 2:
                time.sleep(1)  # a paused guest writes nothing meanwhile
                snaps = asyncio.run(sources.take_snapshots(
                    spec(2, [s.snapshot_id for s in snaps]), env))
            disk = asyncio.run(kvm.open_source(nodes_pb2.KvmSource(
                path=disks[0].locator, snapshot=snaps[0].snapshot_id), None, env))
            try:
                if n == 1:
                    _read(disk, tmp_path / "point.raw")
                else:  # the incremental since the stop's point: nothing changed
                    assert disk.full_sync_reason == ""
                    assert [e for e in disk.extents() if not e.clean and not e.zero] == []
            finally:
                disk.close()
            asyncio.run(kvm.drop_snapshots(nodes_pb2.DropSnapshotsSpec(
                plan="plans/p1", cycle=f"plans/p1/cycles/{n}", disks=disks), env))
        # The cycle leaves the VM as the stop left it.
        assert guest.qmp("query-status")["status"] == "paused"
    held = check_point(tmp_path / "point.raw", "a", KIB)  # e2fsck, an exact prefix
    assert held.count >= fsynced, (held, fsynced)
    print({"fsynced_before_the_stop": fsynced, "files_in_the_point": held.count})


# --- a running libvirt domain -----------------------------------------------------------------

@pytest.fixture
def libvirtd():
    """tests/test_kvm_libvirt.py's libvirtd, once what it needs is known to be here."""
    require_libvirt()
    # Not pytest's tmp_path: its parents are root's only, and libvirtd runs as nobody.
    root = Path(tempfile.mkdtemp(prefix="dr-libvirt-"))
    os.chmod(root, 0o755)
    d = Libvirtd(root)
    yield d
    d.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.e2e
def test_a_libvirt_domain_is_suspended_before_its_point(libvirtd, tmp_path):
    import libvirt
    conn, dom = _boot(libvirtd)
    uuid = dom.UUIDString()
    try:
        time.sleep(2)  # the guest writes ~20 files
        assert kvm_libvirt.suspend(libvirtd.uri, uuid) == \
            f"{libvirtd.uri} vm1: paused (was running)"
        assert dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED
        assert kvm_libvirt.suspend(libvirtd.uri, uuid) == \
            f"{libvirtd.uri} vm1: paused (was paused)"
        first = kvm_libvirt.take(libvirtd.uri, uuid, [("a", "vda")], plan_prefix=PREFIX,
                                 checkpoint=f"{PREFIX}1", previous={})
        _libvirt_read(first["a"], tmp_path / "rp1.raw", None)
        kvm_libvirt.drop(libvirtd.uri, uuid)
        time.sleep(1)
        second = kvm_libvirt.take(libvirtd.uri, uuid, [("a", "vda")], plan_prefix=PREFIX,
                                  checkpoint=f"{PREFIX}2", previous=first)
        assert second["a"].full_sync_reason == ""
        read = _libvirt_read(second["a"], tmp_path / "rp2.raw", tmp_path / "rp1.raw")
        kvm_libvirt.drop(libvirtd.uri, uuid)
        assert dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED
    finally:
        dom.destroy()
        conn.close()
    assert read == 0  # nothing written after the suspend's point
    assert check_point(tmp_path / "rp1.raw", "a", KIB).count > 0

