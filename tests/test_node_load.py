"""Tasks go to nodes by load (nodes.should_defer), and DrainNode: unit tests of the
rule, then the node and lease services in-process over SQLite."""

from __future__ import annotations

import pytest

from dr_control.services.inventory import InventoryService
from dr_control.services.leasing import Leases
from dr_control.services.nodes import (LOAD_MARGIN, NodeLoad, get_node, node_load,
                                       register_node, set_draining, should_defer)
from dr_control.services.protection import ProtectionService
from tests.helpers.disks import MiB, make_disk
from tests.helpers.services import service_context


def test_load_is_the_larger_of_slots_in_use_and_backpressure():
    assert node_load(0, 4, 0.0) == 0.0
    assert node_load(2, 4, 0.1) == 0.5
    assert node_load(1, 4, 0.9) == 0.9
    assert node_load(9, 4, 0.0) == 1.0  # over capacity (max_tasks lowered) stays 1
    assert node_load(0, 0, 0.0) == 0.0  # a node declaring no slots does not divide by 0


def test_a_node_at_capacity_gets_nothing():
    full = NodeLoad("a", leased=4, max_tasks=4)
    assert should_defer(full, [], queued=100)
    assert should_defer(full, [NodeLoad("b", 4, 4)], queued=100)


def test_a_lone_node_takes_work():
    assert not should_defer(NodeLoad("a", 3, 4), [], queued=1)


def test_busier_node_defers_to_a_less_loaded_one():
    me = NodeLoad("a", leased=2, max_tasks=4)  # 0.5
    idle = NodeLoad("b", leased=0, max_tasks=4)  # 0.0
    assert should_defer(me, [idle], queued=1)
    # Within the margin: no deferral (no ping-pong between nodes loaded alike).
    near = NodeLoad("b", leased=2, max_tasks=4, backpressure=0.5 - LOAD_MARGIN + 0.01)
    assert not should_defer(me, [near], queued=1)
    # Backpressure counts: an idle-slot node whose readers wait is not "less loaded".
    blocked = NodeLoad("b", leased=0, max_tasks=4, backpressure=1.0)
    assert not should_defer(me, [blocked], queued=1)
    # A node under backpressure defers even with free slots.
    assert should_defer(NodeLoad("a", 0, 4, backpressure=0.9), [idle], queued=1)


def test_peers_without_free_slots_do_not_count():
    me = NodeLoad("a", leased=2, max_tasks=4)
    full_but_small = NodeLoad("b", leased=1, max_tasks=1)  # load 1, no free slot
    assert not should_defer(me, [full_but_small], queued=1)


def test_a_deep_queue_fills_every_node_at_once():
    me = NodeLoad("a", leased=2, max_tasks=4)  # 2 free
    idle = NodeLoad("b", leased=0, max_tasks=4)  # 4 free
    assert should_defer(me, [idle], queued=5)
    assert not should_defer(me, [idle], queued=6)  # 6 >= 2 + 4: everyone will be busy


@pytest.fixture
async def six_disk_plan(tmp_path):
    """(context, leases, protection service) on SQLite: plan p of six 1 MiB disks
    from file site src to dst; no node registered."""
    async with service_context(f"sqlite+aiosqlite:///{tmp_path}/c.db", tmp_path) as ctx:
        yield await _plan_of_six_disks(ctx, tmp_path)


async def _plan_of_six_disks(ctx, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "repo").mkdir()
    for i in range(6):
        make_disk(tmp_path / "src" / f"d{i}.img", MiB, [(0, MiB)])
    inv = InventoryService(ctx)
    await inv.create_site("src", kind="file", path=str(tmp_path / "src"))
    await inv.create_site("dst", kind="file", path=str(tmp_path / "repo"))
    leases = Leases(ctx)
    prot = ProtectionService(ctx)
    await prot.create_plan("p", source_site="sites/src", target_site="sites/dst",
                           target_kind="fs",
                           workloads=[f"sites/src/workloads/d{i}" for i in range(6)],
                           disks=[], rpo_seconds=60, keep_last=0, chunk_size=0,
                           compression="")
    return ctx, leases, prot


async def _register(ctx, *ids, max_tasks=4):
    for n in ids:
        await register_node(ctx, n, hostname=n, version="t", max_tasks=max_tasks,
                            budget_bytes=1)


async def test_capacity_and_spreading_over_asking_nodes(six_disk_plan):
    ctx, leases, prot = six_disk_plan
    await _register(ctx, "n1", max_tasks=1)
    await prot.run_plan("plans/p")  # 6 replicate tasks
    assert await leases.acquire_task("nodes/n1") is not None
    assert await leases.acquire_task("nodes/n1") is None, "n1 is at its max_tasks"

    await _register(ctx, "n2", "n3")
    assert (await leases.acquire_task("nodes/n2")) is not None  # n3 not asking yet
    assert await leases.acquire_task("nodes/n3") is not None  # n3: 0 tasks, n2 0.25
    # n2 (0.25) and n3 (0.25) alike: either may take; 3 tasks left for 6 free slots.
    assert await leases.acquire_task("nodes/n2") is not None  # n2 now 0.5
    assert await leases.acquire_task("nodes/n2") is None, "n3 (0.25) is less loaded"
    assert await leases.acquire_task("nodes/n3") is not None  # n3 now 0.5
    assert await leases.acquire_task("nodes/n2") is not None


async def test_draining_node_gets_nothing_and_releases_running_tasks(six_disk_plan):
    ctx, leases, prot = six_disk_plan
    await _register(ctx, "n1", "n2")
    await prot.run_plan("plans/p")
    t = await leases.acquire_task("nodes/n1")
    node = await set_draining(ctx, "nodes/n1", True)
    assert node.draining and node.leased_tasks == 1
    assert await leases.acquire_task("nodes/n1") is None
    progress = await leases.report_progress(f"tasks/{t.id}", t.lease_token, checkpoint={
        "watermark_chunk": 1, "segments": [], "tail": ""}, bytes_done=1, stats={},
        full_sync=True)
    assert progress.release and not progress.cancel
    # The node hands it back as a graceful stop does: queued again, no attempt used.
    await leases.complete_task(f"tasks/{t.id}", t.lease_token, error={
        "reason": "node-stopping", "message": "draining", "retryable": True}, stats={},
        result={}, full_sync=True)
    assert (await get_node(ctx, "nodes/n1")).leased_tasks == 0
    got = [await leases.acquire_task("nodes/n2") for _ in range(4)]
    got = [x for x in got if x is not None]
    again = next(x for x in got if x.id == t.id)
    assert again.attempts == 1 and again.checkpoint["watermark_chunk"] == 1
    [(cycle, _)] = await prot.list_cycles("plans/p")
    assert cycle.state == "running"
    await set_draining(ctx, "nodes/n1", False)
    assert not (await get_node(ctx, "nodes/n1")).draining


async def test_rpo_report_lists_every_plan(six_disk_plan):
    ctx, leases, prot = six_disk_plan
    [status] = await prot.rpo_report()
    assert status.plan.id == "p" and not status.rpo_met and status.last_point is None
