"""The paired topology's control-plane side (issue 7, docs/PAIRED.md): tasks bound to
sites, a replicate task's target node chosen at lease time, pair health in ListNodes.

The cycle, node and lease services in-process over SQLite and PostgreSQL, then a real
dr-control with drctl and real dr-node processes registering their site and transfer
address.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from dr_common.proto.dr.v1 import nodes_pb2
from dr_control.api import convert
from dr_control.services.taskspecs import load
from dr_control.db.models import Node, Task, utcnow
from dr_control.services.inventory import InventoryService
from dr_control.services.leasing import NO_TARGET_NODE
from dr_control.services.nodes import (heartbeat, list_nodes, node_online, register_node,
                                       set_draining)
from dr_control.services.points import PointService
from tests.helpers.disks import MiB, make_disk
from tests.helpers.services import service_context, two_disk_plan
from tools.localcluster import Cluster, free_port, wait_for

TRANSFER = "127.0.0.1:7443"


@pytest.fixture
async def paired_plan(metadata_url, tmp_path):
    """Sites src (file) and dst (paired, the repository), plan p from src to dst with
    two disks; nodes: s1 at src, t1 at dst serving transfers, u of no site."""
    async with service_context(metadata_url, tmp_path) as ctx:
        yield await _paired_plan(ctx, tmp_path)


async def _paired_plan(ctx, tmp_path):
    leases, prot = await two_disk_plan(ctx, tmp_path, paired=True)
    (tmp_path / "plain").mkdir()
    await InventoryService(ctx).create_site("plain", kind="file", path=str(tmp_path / "plain"))
    await register_node(ctx, "s1", hostname="s1", version="t", max_tasks=4, budget_bytes=1,
                        site="src")
    await register_node(ctx, "t1", hostname="t1", version="t", max_tasks=4, budget_bytes=1,
                        site="dst", transfer_address=TRANSFER)
    await register_node(ctx, "u", hostname="u", version="t", max_tasks=4, budget_bytes=1)
    return ctx, leases, prot


async def _set_node(ctx, node_id: str, **values) -> None:
    async with ctx.db() as s, s.begin():
        node = await s.get(Node, node_id)
        for k, v in values.items():
            setattr(node, k, v)


async def _task(ctx, task_id: int) -> Task:
    async with ctx.db() as s:
        return await s.get(Task, task_id)


async def _complete(leases, task, result: dict | None = None) -> None:
    await leases.complete_task(f"tasks/{task.id}", task.lease_token, error=None, stats={},
                               result=result or {}, full_sync=True)


async def _replicate_all(leases) -> None:
    """The source node replicates both disks of the queued cycle."""
    for _ in range(2):
        t = await leases.acquire_task("nodes/s1")
        assert t.kind == "replicate"
        await _complete(leases, t, {"root_hash": "ab" * 32, "size_bytes": MiB})


async def test_replicate_goes_to_the_source_site_with_its_target_node(paired_plan):
    ctx, leases, prot = paired_plan
    await prot.run_plan("plans/p")
    # Nodes of no site, and the target site's, never get the source-side work.
    assert await leases.acquire_task("nodes/u") is None
    assert await leases.acquire_task("nodes/t1") is None
    t = await leases.acquire_task("nodes/s1")
    assert t.kind == "replicate" and t.site == "src"
    msg = convert.task(t)
    assert (msg.replicate.pair.node, msg.replicate.pair.address) == ("nodes/t1", TRANSFER)
    # The pair is recorded on the task row too.
    assert load(await _task(ctx, t.id)).pair.node == "nodes/t1"
    # TLS off: no certificate name; the source node falls back to the node id.
    assert msg.replicate.pair.cert_name == ""


async def test_the_pair_carries_the_target_nodes_certificate_name(paired_plan):
    """A target node that registered with a certificate shared by its pods (named by
    the prefix of their ids): the source is told that name, not the node id."""
    ctx, leases, prot = paired_plan
    await register_node(ctx, "pool-a1", hostname="pool-a1", version="t", max_tasks=4,
                        budget_bytes=1, site="dst", transfer_address="127.0.0.1:7444",
                        cert_name="pool")
    await _set_node(ctx, "t1", draining=True)
    async with ctx.db() as s:
        assert (await s.get(Node, "pool-a1")).cert_name == "pool"
    await prot.run_plan("plans/p")
    t = await leases.acquire_task("nodes/s1")
    msg = convert.task(t)
    assert (msg.replicate.pair.node, msg.replicate.pair.cert_name) == ("nodes/pool-a1", "pool")
    assert msg.replicate.pair.address == "127.0.0.1:7444"
    assert load(await _task(ctx, t.id)).pair.cert_name == "pool"


async def test_repository_tasks_go_to_the_target_site_only(paired_plan, tmp_path):
    ctx, leases, prot = paired_plan
    await prot.run_plan("plans/p")
    await _replicate_all(leases)
    assert await leases.acquire_task("nodes/u") is None
    assert await leases.acquire_task("nodes/s1") is None
    fin = await leases.acquire_task("nodes/t1")
    assert fin.kind == "finalize" and fin.site == "dst"
    assert fin.target_site == "dst"
    await _complete(leases, fin)
    points = PointService(ctx)
    [point] = await points.list_points("plans/p")
    name = f"plans/p/recoveryPoints/{point.id}"
    verify = await points.verify(name)
    restore = await points.restore(name, disk=point.disks[0]["disk"],
                                   destination=str(tmp_path / "out.img"), fmt="raw",
                                   overwrite=False)
    gc = await points.collect_garbage("plans/p", 0)
    assert {verify.site, restore.site, gc.site} == {"dst"}
    assert await leases.acquire_task("nodes/u") is None
    assert await leases.acquire_task("nodes/s1") is None
    got = {(await leases.acquire_task("nodes/t1")).id for _ in range(3)}
    assert got == {verify.id, restore.id, gc.id}


@pytest.mark.parametrize("how", ["offline", "draining", "no-transfer-address"])
async def test_no_target_node_leaves_the_replicate_task_queued(paired_plan, how):
    ctx, leases, prot = paired_plan
    if how == "offline":
        await _set_node(ctx, "t1", last_heartbeat_time=utcnow() - timedelta(minutes=5))
    elif how == "draining":
        await set_draining(ctx, "nodes/t1", True)
    else:
        await _set_node(ctx, "t1", transfer_address="")
    await prot.run_plan("plans/p")
    assert await leases.acquire_task("nodes/s1") is None
    async with ctx.db() as s:
        tasks = (await s.scalars(select(Task))).all()
    assert {t.state for t in tasks} == {"queued"}
    assert {t.error_reason for t in tasks} == {NO_TARGET_NODE}
    assert all("sites/dst" in t.error_message for t in tasks)
    # Users see it on the cycle's disks (drctl plan status, plan cycles).
    [(cycle, cycle_tasks)] = await prot.list_cycles("plans/p")
    shown = convert.cycle(cycle, cycle_tasks, MiB).disks
    assert all("waiting for a target node in site sites/dst" in d.message for d in shown)
    # The target node comes back: the task is leased, and the reason is gone.
    await _set_node(ctx, "t1", last_heartbeat_time=utcnow(), draining=False,
                    transfer_address=TRANSFER)
    t = await leases.acquire_task("nodes/s1")
    assert t is not None and load(t).pair.address == TRANSFER and t.error_reason == ""


async def test_the_least_loaded_target_node_is_chosen(paired_plan):
    ctx, leases, prot = paired_plan
    await register_node(ctx, "t2", hostname="t2", version="t", max_tasks=4, budget_bytes=1,
                        site="dst", transfer_address="127.0.0.1:7444")
    await heartbeat(ctx, "nodes/t1", running_tasks=0, inflight_bytes=0, backpressure=0.9)
    await prot.run_plan("plans/p")
    first = await leases.acquire_task("nodes/s1")
    assert load(first).pair.node == "nodes/t2"
    # t2 now serves one stream (1/4 loaded) and t1 is idle again: t1.
    await heartbeat(ctx, "nodes/t1", running_tasks=0, inflight_bytes=0, backpressure=0.0)
    second = await leases.acquire_task("nodes/s1")
    assert load(second).pair.node == "nodes/t1"


async def test_unpaired_plans_stay_with_nodes_of_no_site(paired_plan):
    ctx, leases, prot = paired_plan
    await prot.create_plan("q", source_site="sites/src", target_site="sites/plain",
                           target_kind="fs", workloads=["sites/src/workloads/a"], disks=[],
                           rpo_seconds=60, keep_last=0, chunk_size=0, compression="")
    await prot.run_plan("plans/q")
    assert await leases.acquire_task("nodes/s1") is None
    assert await leases.acquire_task("nodes/t1") is None
    t = await leases.acquire_task("nodes/u")
    assert t.kind == "replicate" and t.site == "" and not load(t).HasField("pair")
    assert convert.task(t).replicate.pair.address == ""


async def test_heartbeat_pairs_and_site_show_in_list_nodes(paired_plan):
    ctx, leases, prot = paired_plan
    pair = {"node": "nodes/t1", "address": TRANSFER, "streams": 2, "rtt_seconds": 0.004,
            "throughput_bytes_per_second": 5e7, "credit_bytes": "33554432", "errors": "1"}
    await heartbeat(ctx, "nodes/s1", running_tasks=2, inflight_bytes=0, pairs=[pair])
    nodes = {n.id: convert.node(n, node_online(ctx, n)) for n in await list_nodes(ctx)}
    assert (nodes["s1"].site, nodes["t1"].site, nodes["u"].site) == ("src", "dst", "")
    assert nodes["t1"].transfer_address == TRANSFER
    [health] = nodes["s1"].pairs
    assert (health.node, health.streams, health.credit_bytes, health.errors) == (
        "nodes/t1", 2, 32 * MiB, 1)
    assert list(nodes["t1"].pairs) == []


async def test_a_site_is_a_resource_id(paired_plan):
    ctx, leases, prot = paired_plan
    from dr_common.errors import InvalidArgument
    with pytest.raises(InvalidArgument, match="site"):
        await register_node(ctx, "x", hostname="x", version="t", max_tasks=1, budget_bytes=1,
                            site="Not A Site")


# --- a real control plane: drctl and dr-node processes ----------------------------------

def test_paired_site_and_nodes_through_drctl(tmp_path):
    with Cluster(tmp_path) as c:
        (tmp_path / "recovery").mkdir()
        added = c.drctl("site", "add", "recovery", "--kind", "file", "--path",
                        str(tmp_path / "recovery"), "--paired")[1]
        assert ["paired:", "yes"] in [line.split() for line in added.splitlines()]
        c.drctl("site", "add", "dc", "--kind", "file", "--path", str(c.src))
        sites = {s["name"]: s for s in c.drctl_json("site", "list")}
        assert sites["sites/recovery"]["paired"] is True
        assert sites["sites/dc"]["paired"] is False
        table = c.drctl("site", "list")[1].splitlines()
        rows = {line.split()[0]: line.split() for line in table[1:]}
        assert "PAIRED" in table[0].split() and "yes" in rows["recovery"]

        # Real nodes send their site and transfer address when they register.
        port = free_port()
        c.start_node("tgt", site="recovery", transfer_port=port)
        c.start_node("src1", site="dc")
        nodes = {n["name"]: n for n in c.drctl_json("node", "list")}
        assert nodes["nodes/tgt"]["site"] == "recovery"
        assert nodes["nodes/tgt"]["transfer_address"] == f"127.0.0.1:{port}"
        assert nodes["nodes/src1"]["site"] == "dc"
        assert nodes["nodes/n1"]["site"] == "" and nodes["nodes/n1"]["pairs"] == []

        # A source node's pair health, as its heartbeats carry it.
        c.nodes_api.RegisterNode(nodes_pb2.RegisterNodeRequest(
            node_id="fake-src", hostname="h", version="t", max_tasks=1, site="dc"))
        c.nodes_api.Heartbeat(nodes_pb2.HeartbeatRequest(node="nodes/fake-src", pairs=[
            nodes_pb2.PairHealth(node="nodes/tgt", address=f"127.0.0.1:{port}", streams=3,
                                 rtt_seconds=0.012, throughput_bytes_per_second=2.5e7,
                                 credit_bytes=16 * MiB, errors=2)]))
        [pair] = {n["name"]: n for n in c.drctl_json("node", "list")}["nodes/fake-src"]["pairs"]
        assert pair["node"] == "nodes/tgt" and pair["streams"] == 3
        assert pair["credit_bytes"] == str(16 * MiB)  # proto3 JSON: 64-bit ints as strings
        lines = c.drctl("node", "list")[1].splitlines()
        header, rows = lines[0], {line.split()[0]: line for line in lines[1:]}
        assert "SITE" in header and "PAIRS" in header
        assert "tgt 12ms 25.0 MB/s 16.0 MiB cr 2 err" in rows["fake-src"]
        # The REST face shows the same.
        import urllib.request
        with urllib.request.urlopen(f"{c.rest_url}/v1/nodes", timeout=10) as r:
            rest = {n["name"]: n for n in json.load(r)["nodes"]}
        assert rest["nodes/tgt"]["site"] == "recovery"


def test_a_paired_plan_waits_for_its_target_node(tmp_path):
    """Through the real daemons: the source node gets nothing while no target node is
    online (the cycle's disks and the log say why), then the cycle goes through one."""
    with Cluster(tmp_path) as c:
        c.add_paired_site("recovery")
        make_disk(c.src / "vm1.img", MiB, [(0, MiB)])
        c.drctl("site", "add", "dc", "--kind", "file", "--path", str(c.src))
        c.drctl("plan", "create", "p", "--source", "dc", "--target", "recovery",
                "--workload", "vm1", "--rpo", "1h")
        c.start_node("src1", site="dc")
        c.drctl("plan", "run", "p")
        wait_for(lambda: "paired task not leased: no target node" in c.log("control.log"),
                 what="the control plane to say why the task waits")
        [cycle] = c.cycles("plans/p")
        assert cycle["state"] == "queued"
        assert "waiting for a target node" in cycle["disks"][0]["message"]
        assert "waiting for a target node" in c.drctl("plan", "status", "p")[1]
        # A target node comes: the source node streams the disk to it, and it writes
        # the point (the data path: dr_node/transfer); n1, of no site, takes nothing.
        c.start_node("tgt", site="recovery", transfer_port=free_port())
        wait_for(lambda: c.cycles("plans/p")[0]["state"] == "completed", timeout=60,
                 what="the paired cycle to complete")
        assert len(c.points("plans/p")) == 1
        assert "task started" not in c.log("node-n1.log")
        assert "transfer stream opened" in c.log("node-src1.log")
