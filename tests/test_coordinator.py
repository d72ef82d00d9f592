"""The cycle and lease services in-process over each metadata backend (SQLite, and
PostgreSQL from tests/peers/pg.py): lease fencing, expiry, cycle completion, one active
cycle per plan."""

from __future__ import annotations

from datetime import timedelta

import pytest

from dr_common.errors import FailedPrecondition, InvalidArgument
from dr_control.db.models import Plan, Task, utcnow
from dr_control.services.taskspecs import load
from dr_control.services.cycles import active_cycle, start_cycle
from dr_control.services.nodes import register_node
from dr_control.services.points import PointService
from tests.helpers.disks import MiB
from tests.helpers.services import service_context, two_disk_plan


@pytest.fixture
async def plan_on_two_nodes(metadata_url, tmp_path):
    """(context, leases, protection service): plan p of two disks (two_disk_plan),
    nodes n1 and n2 registered."""
    async with service_context(metadata_url, tmp_path) as ctx:
        yield await _plan_of_two_disks(ctx, tmp_path)


async def _plan_of_two_disks(ctx, tmp_path):
    leases, prot = await two_disk_plan(ctx, tmp_path)
    for n in ("n1", "n2"):
        await register_node(ctx, n, hostname=n, version="t", max_tasks=4, budget_bytes=1)
    return ctx, leases, prot


async def _expire(ctx, task_id: int) -> None:
    async with ctx.db() as s, s.begin():
        (await s.get(Task, task_id)).lease_expire_time = utcnow() - timedelta(seconds=1)


async def test_stale_holder_is_fenced_and_next_holder_resumes(plan_on_two_nodes):
    ctx, leases, prot = plan_on_two_nodes
    await prot.run_plan("plans/p")
    t1 = await leases.acquire_task("nodes/n1")
    cp = {"watermark_chunk": 7, "segments": [], "tail": ""}
    await leases.report_progress(f"tasks/{t1.id}", t1.lease_token, checkpoint=cp,
                                 bytes_done=7, stats={}, full_sync=True)
    await _expire(ctx, t1.id)
    assert await leases.expire_leases() == 1
    # The requeued task keeps its id and checkpoint; n2 may lease the other disk first.
    got = [await leases.acquire_task("nodes/n2"), await leases.acquire_task("nodes/n2")]
    again = next(t for t in got if t.id == t1.id)
    assert again.lease_token == t1.lease_token + 1 and again.checkpoint == cp
    with pytest.raises(FailedPrecondition, match="lease .* was lost"):
        await leases.report_progress(f"tasks/{t1.id}", t1.lease_token, checkpoint={},
                                     bytes_done=0, stats={}, full_sync=True)
    with pytest.raises(FailedPrecondition):
        await leases.complete_task(f"tasks/{t1.id}", t1.lease_token, error=None, stats={},
                                   result={"root_hash": "x", "size_bytes": 1}, full_sync=True)


async def test_point_recorded_only_after_finalize(plan_on_two_nodes, tmp_path):
    ctx, leases, prot = plan_on_two_nodes
    await prot.run_plan("plans/p")
    points = PointService(ctx)
    for _ in range(2):
        t = await leases.acquire_task("nodes/n1")
        assert t.kind == "replicate"
        await leases.complete_task(f"tasks/{t.id}", t.lease_token, error=None, stats={},
                                   result={"root_hash": "ab" * 32, "size_bytes": MiB},
                                   full_sync=True)
        assert await points.list_points("plans/p") == []
    fin = await leases.acquire_task("nodes/n1")
    assert fin.kind == "finalize" and len(load(fin).disks) == 2
    assert await points.list_points("plans/p") == []
    await leases.complete_task(f"tasks/{fin.id}", fin.lease_token, error=None, stats={},
                               result={}, full_sync=False)
    [point] = await points.list_points("plans/p")
    assert point.id == load(fin).recovery_point_id
    assert (await prot.status("plans/p")).state == "running"
    # The point restores in the formats its target kind lists: raw unless told.
    name, disk = f"plans/p/recoveryPoints/{point.id}", point.disks[0]["disk"]
    with pytest.raises(InvalidArgument) as e:
        await points.restore(name, disk=disk, destination=str(tmp_path / "a.vmdk"),
                             fmt="vmdk", overwrite=False)
    assert e.value.field == "format" and "'raw' or 'qcow2'" in str(e.value)
    task = await points.restore(name, disk=disk, destination=str(tmp_path / "a.raw"), fmt="",
                                overwrite=False)
    assert load(task).format == "raw"


async def test_exhausted_retries_fail_the_cycle_without_a_point(plan_on_two_nodes):
    ctx, leases, prot = plan_on_two_nodes
    await prot.run_plan("plans/p")
    err = {"reason": "source-unavailable", "message": "gone", "retryable": True}
    for attempt in range(2):  # max_attempts = 2
        t = await leases.acquire_task("nodes/n1")
        await leases.complete_task(f"tasks/{t.id}", t.lease_token, error=err, stats={},
                                   result={}, full_sync=False)
    [(cycle, _)] = await prot.list_cycles("plans/p")
    assert cycle.state == "failed" and "gone" in cycle.error_message
    assert await PointService(ctx).list_points("plans/p") == []
    status = await prot.status("plans/p")
    assert status.state == "partial"
    assert {s for _, s in status.disks} == {"sync-failed"}
    # The other disk's queued task was cancelled with the cycle: nothing left to lease.
    assert await leases.acquire_task("nodes/n2") is None


async def test_released_task_costs_no_attempt(plan_on_two_nodes):
    ctx, leases, prot = plan_on_two_nodes
    await prot.run_plan("plans/p")
    for _ in range(5):  # more than max_attempts
        t = await leases.acquire_task("nodes/n1")
        await leases.complete_task(f"tasks/{t.id}", t.lease_token, full_sync=False, stats={},
                                   result={}, error={"reason": "node-stopping",
                                                    "message": "", "retryable": True})
    [(cycle, _)] = await prot.list_cycles("plans/p")
    assert cycle.state in ("queued", "running")


async def test_running_task_learns_a_new_bandwidth_cap(plan_on_two_nodes):
    ctx, leases, prot = plan_on_two_nodes
    await prot.run_plan("plans/p")
    t = await leases.acquire_task("nodes/n1")
    assert load(t).bandwidth_bytes_per_second == 0
    await prot.update_plan("plans/p", {"bandwidth": 5_000_000})
    cancel, bandwidth, _release = await leases.report_progress(
        f"tasks/{t.id}", t.lease_token, checkpoint={}, bytes_done=0, stats={}, full_sync=True)
    assert (cancel, bandwidth) == (False, 5_000_000)


async def test_a_second_active_cycle_is_refused(plan_on_two_nodes):
    """Two replicas may both find a plan due during a scheduler hand-over: the database
    keeps one cycle (migration 0007), and the loser's start_cycle says None."""
    ctx, leases, prot = plan_on_two_nodes
    first = await prot.run_plan("plans/p")
    async with ctx.db() as s, s.begin():  # as if it had not seen `first` yet
        assert await start_cycle(ctx, s, await s.get(Plan, "p")) is None
        # The caller's transaction goes on after the refused insert.
        assert (await active_cycle(s, "p")).id == first.id
    assert (await prot.run_plan("plans/p")).id == first.id
    [(cycle, tasks)] = await prot.list_cycles("plans/p")
    assert cycle.id == first.id and len(tasks) == 2


async def test_a_failed_delete_waits_before_retention_tries_again(plan_on_two_nodes):
    """Retention runs every pass: a target that refuses a delete must not get one per pass."""
    from dr_control.db.models import Cycle, RecoveryPoint
    from dr_control.services import deletion
    ctx, leases, prot = plan_on_two_nodes
    now = utcnow()
    async with ctx.db() as s, s.begin():
        plan = await s.get(Plan, "p")
        plan.keep_last = 1
        for seq in (1, 2):
            cycle = Cycle(plan_id="p", seq=seq, state="completed")
            s.add(cycle)
            await s.flush()
            s.add(RecoveryPoint(plan_id="p", id=f"rp{seq}", cycle_id=cycle.id, cycle_seq=seq,
                                create_time=now - timedelta(hours=3 - seq), disks=[]))
        failed = Task(kind="delete", plan_id="p", target="plans/p/recoveryPoints/rp1",
                      state="failed", end_time=now - timedelta(minutes=1))
        s.add(failed)
    async with ctx.db() as s, s.begin():
        assert await deletion.apply_retention(ctx, s, await s.get(Plan, "p")) == 0
    async with ctx.db() as s, s.begin():
        (await s.get(Task, failed.id)).end_time = now - deletion.DELETE_RETRY_AFTER \
            - timedelta(seconds=1)
    async with ctx.db() as s, s.begin():
        assert await deletion.apply_retention(ctx, s, await s.get(Plan, "p")) == 1
        assert (await s.get(RecoveryPoint, ("p", "rp1"))).state == deletion.DELETING


async def _vsphere_plan(ctx, tmp_path):
    """Plan v from a vsphere site (rows written directly: no vCenter is asked) with one
    VM of two disks, to a file repository."""
    from dr_control.db.models import Disk, Site, Workload
    from dr_control.services.inventory import InventoryService
    from dr_control.services.leasing import Leases
    from dr_control.services.protection import ProtectionService
    (tmp_path / "repo").mkdir()
    async with ctx.db() as s, s.begin():
        s.add(Site(id="vc", kind="vsphere", settings={"url": "https://vc.invalid/sdk",
                                                     "user": "u"}))
        s.add(Workload(site_id="vc", id="web-1", display_name="web-1"))
        for key in (2000, 2001):
            s.add(Disk(name=f"sites/vc/workloads/web-1/disks/disk-{key}", site_id="vc",
                       workload_id="web-1", id=f"disk-{key}", locator=f"uuid-1/{key}",
                       size=MiB))
    await InventoryService(ctx).create_site("dst", kind="file", path=str(tmp_path / "repo"))
    prot = ProtectionService(ctx)
    await prot.create_plan("v", source_site="sites/vc", target_site="sites/dst",
                           target_kind="fs", workloads=["sites/vc/workloads/web-1"], disks=[],
                           rpo_seconds=60, keep_last=0, chunk_size=0, compression="",
                           quiesce=True)
    await register_node(ctx, "n1", hostname="n1", version="t", max_tasks=4, budget_bytes=1)
    return Leases(ctx), prot


@pytest.mark.parametrize("outcome", ["completed", "failed"])
async def test_a_vsphere_cycle_drops_its_snapshots_when_it_ends(
        metadata_url, tmp_path, outcome):
    async with service_context(metadata_url, tmp_path) as ctx:
        leases, prot = await _vsphere_plan(ctx, tmp_path)
        await prot.run_plan("plans/v")
        snap = await leases.acquire_task("nodes/n1")
        assert snap.kind == "snapshot" and load(snap).quiesce
        assert await leases.acquire_task("nodes/n1") is None  # nothing to drop yet
        if outcome == "failed":
            await leases.complete_task(f"tasks/{snap.id}", snap.lease_token, stats={},
                                       result={}, full_sync=False, error={
                                           "reason": "vsphere-fault", "retryable": False,
                                           "message": "CreateSnapshot_Task: InvalidState"})
        else:
            refs = {f"sites/vc/workloads/web-1/disks/disk-{k}": f"ref-{k}"
                    for k in (2000, 2001)}
            await leases.complete_task(f"tasks/{snap.id}", snap.lease_token, error=None,
                                       stats={}, result={"source_snapshots": refs},
                                       full_sync=False)
            for _ in range(2):
                t = await leases.acquire_task("nodes/n1")
                assert t.kind == "replicate" and load(t).source.vsphere.vm_uuid == "uuid-1"
                await leases.complete_task(f"tasks/{t.id}", t.lease_token, error=None,
                                           stats={}, full_sync=True,
                                           result={"root_hash": "ab" * 32, "size_bytes": MiB})
            fin = await leases.acquire_task("nodes/n1")
            assert fin.kind == "finalize"
            await leases.complete_task(f"tasks/{fin.id}", fin.lease_token, error=None,
                                       stats={}, result={}, full_sync=False)
        [(cycle, _)] = await prot.list_cycles("plans/v")
        assert cycle.state == outcome
        drop = await leases.acquire_task("nodes/n1")
        assert drop is not None and drop.kind == "drop_snapshots"
        spec = load(drop)
        assert spec.plan == "plans/v" and spec.source.WhichOneof("kind") == "vsphere"
        assert sorted(d.locator for d in spec.disks) == ["uuid-1/2000", "uuid-1/2001"]
        assert drop.source_site == "vc"
        await leases.complete_task(f"tasks/{drop.id}", drop.lease_token, error=None,
                                   stats={}, result={}, full_sync=False)
        [(cycle, _)] = await prot.list_cycles("plans/v")
        assert cycle.state == outcome  # dropping changes nothing of the ended cycle


async def test_a_lease_the_node_never_heard_of_is_not_renewed_by_its_heartbeats(
        plan_on_two_nodes):
    """dr-control killed as it answered AcquireTask: the task is leased to n1, which never
    got it. n1's heartbeats list only what it runs, so that lease is not renewed, expires
    and the task is queued again; a task n1 does run keeps its lease."""
    from dr_control.services.nodes import heartbeat
    ctx, leases, prot = plan_on_two_nodes
    await prot.run_plan("plans/p")
    lost = await leases.acquire_task("nodes/n1")
    kept = await leases.acquire_task("nodes/n1")
    for t in (lost, kept):
        await _expire(ctx, t.id)
    await heartbeat(ctx, "nodes/n1", running_tasks=1, inflight_bytes=0,
                    tasks=[f"tasks/{kept.id}"])
    assert await leases.expire_leases() == 1
    async with ctx.db() as s:
        assert (await s.get(Task, lost.id)).state == "queued"
        assert (await s.get(Task, kept.id)).state == "leased"
    # A node that lists no task while it runs some (older nodes) renews all its leases.
    await _expire(ctx, kept.id)
    await heartbeat(ctx, "nodes/n1", running_tasks=1, inflight_bytes=0)
    assert await leases.expire_leases() == 0
