"""Adapters as plug-ins (issue 12): the shape the code keeps, checked.

- no dispatch on source or target kinds outside the registries, and the layering
  (sources never import targets and vice versa; control and node never import each other);
- a task spec with a field the reader does not know is a clear error, on both sides;
- throttling reaches the engine's adaptive limiter while the one retry layer retries,
  and no chunk put is tried more often than that layer allows (counted at the peer).
"""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path

import pytest

from dr_common import sources, targets
from dr_common.errors import InvalidArgument
from dr_common.proto.dr.v1 import common_pb2, nodes_pb2
from dr_common.remote import RetryPolicy
from dr_common.sources.file import FileDisk
from dr_common.targets.base import SinkRequest
from dr_control.db.models import Task
from dr_control.services import taskspecs
from dr_node import metrics as node_metrics
from dr_node import tasks
from dr_node.config import EngineConfig
from dr_node.engine import Engine
from dr_node.tasks.base import check_known
from tests.helpers import ROOT
from tests.helpers.disks import MiB, make_disk

KIND_NAMES = "|".join(sorted({*sources.KINDS, *targets.KINDS}))
# `kind == "aws"`, `source.kind != 'ebs'`, `kind in ("fs", ...)`: a branch on a platform.
_DISPATCH = re.compile(rf"""(==|!=)\s*["']({KIND_NAMES})["']|["']({KIND_NAMES})["']\s*(==|!=)"""
                       rf"""|kind\s+(not\s+)?in\s+\(\s*["']({KIND_NAMES})["']""")


def _python_files(*parts: str) -> list[Path]:
    found = [p for part in parts for p in ((ROOT / part,) if part.endswith(".py")
                                           else (ROOT / part).rglob("*.py"))]
    return sorted(p for p in found if "proto" not in p.parts and "migrations" not in p.parts)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_no_kind_dispatch_outside_the_registries():
    offenders = []
    for path in _python_files("dr_node", "dr_control/services", "dr_control/api",
                              "dr_control/scheduler.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if _DISPATCH.search(line.split("#", 1)[0]):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "branch on a platform kind; use the registry:\n" + "\n".join(offenders)


def test_the_dispatch_check_can_fail():
    assert _DISPATCH.search('if spec.source_kind == "aws":')
    assert _DISPATCH.search("if kind in ('fs', 's3'):")
    assert not _DISPATCH.search('if task.kind == "replicate":')


@pytest.mark.parametrize("package,forbidden", [
    ("dr_common/sources", "dr_common.targets"),
    ("dr_common/targets", "dr_common.sources"),
    ("dr_control", "dr_node"),
    ("dr_node", "dr_control"),
])
def test_layers_do_not_import_each_other(package, forbidden):
    bad = [f"{p.relative_to(ROOT)} imports {m}" for p in _python_files(package)
           for m in _imports(p) if m == forbidden or m.startswith(forbidden + ".")]
    assert not bad, bad


# -- typed task specs -------------------------------------------------------------------


def test_a_misspelt_field_in_a_stored_spec_is_a_clear_error():
    good = nodes_pb2.ReplicateSpec(plan="plans/p", disk="d1", chunk_size_bytes=MiB)
    stored = taskspecs.store(good)
    assert taskspecs.load(Task(id=7, kind="replicate", spec=stored)) == good
    typo = {**stored, "chunk_size_byte": 4096}
    with pytest.raises(InvalidArgument) as e:
        taskspecs.load(Task(id=7, kind="replicate", spec=typo))
    assert "chunk_size_byte" in e.value.message and "task 7" in e.value.message
    assert e.value.field == "task.spec"


async def test_a_node_refuses_a_spec_with_fields_it_does_not_know():
    # What a newer control plane's task looks like to this node: a field number it
    # has no name for (here 99, varint 1) inside the replicate spec's target.
    target = nodes_pb2.TargetLocator(fs=nodes_pb2.FsTarget(path="/r"))
    task = nodes_pb2.Task(name="tasks/1", kind="replicate")
    task.replicate.target.ParseFromString(target.SerializeToString() + b"\x98\x06\x01")
    with pytest.raises(InvalidArgument) as e:
        check_known(task)
    assert "99" in e.value.message and "replicate.target" in e.value.field
    check_known(nodes_pb2.Task(name="tasks/2", kind="replicate",
                               replicate=nodes_pb2.ReplicateSpec(target=target)))
    with pytest.raises(InvalidArgument) as e:
        tasks.handler(nodes_pb2.Task(name="tasks/3", kind="replicate",
                                     finalize=nodes_pb2.FinalizeSpec()))
    assert "finalize spec" in e.value.message


def test_locators_come_from_the_registries():
    loc = targets.locator("s3", "s3://b/p")
    assert loc.WhichOneof("kind") == "s3" and loc.s3.location == "s3://b/p"
    with pytest.raises(InvalidArgument) as e:
        targets.locator("tape", "/dev/st0")
    assert e.value.field == "target.kind"
    with pytest.raises(InvalidArgument):
        sources.kind("hyper-v")


# -- one retry layer; throttling reaches the limiter -------------------------------------


async def test_slowdown_cuts_the_limiter_and_puts_are_retried_at_one_layer(
        tmp_path, aws_peer, aws_settings, bucket):
    disk = tmp_path / "d.img"
    make_disk(disk, 24 * MiB, [(0, 24 * MiB)])
    chunk = 256 << 10
    engine = Engine(EngineConfig(window_chunks=16, workers=2, max_concurrency=16))
    loc = targets.locator("s3", f"s3://{bucket}/repo")
    loc.site.aws.CopyFrom(common_pb2.AwsSettings(**aws_settings.as_dict()))
    try:
        async with targets.opened(loc, engine.target_env([str(tmp_path)])) as target:
            with FileDisk(disk) as src:
                sink = await target.sink(SinkRequest(plan="plans/p", cycle="plans/p/cycles/1",
                                                     disk="d1", size=src.size, chunk_size=chunk))
                limiter = engine.limiter(sink.name)
                start_limit = limiter.limit
                cuts_before = node_metrics.THROTTLES.labels(target=sink.name)._value.get()
                aws_peer.reset_stats()
                aws_peer.faults(throttle_rate=0.2, services=["s3"], operations=["PutObject"],
                                seed=3)
                try:
                    result = await engine.replicate(disk="d1", source=src, sink=sink,
                                                    chunk_size=chunk)
                finally:
                    stats = aws_peer.stats()
                    aws_peer.clear_faults()
            restored = tmp_path / "restored.img"

            async def progress(done, total):
                await asyncio.sleep(0)

            await target.restore(nodes_pb2.RestoreSpec(
                root_hash=result.root_hash, disk="d1", destination_path=str(restored),
                format="raw"), progress)
    finally:
        engine.close()
    assert restored.read_bytes() == disk.read_bytes()
    assert result.stats.chunks_stored == 24 * MiB // chunk
    thrown = stats["faults"]["throttled"]
    assert thrown >= 10, stats  # ~20 % of ~100 puts
    # The limiter heard of throttling while the remote layer retried: cut, and counted.
    assert 0 < limiter.throttles <= thrown
    assert min(lim for _, lim in limiter.history) < start_limit
    assert node_metrics.THROTTLES.labels(target=sink.name)._value.get() > cuts_before
    # One retry layer: no put was sent more often than that layer's maximum (two
    # layers used to allow 5 x 5, plus throttling until a deadline).
    most = stats["max_attempts"]["s3 PutObject"]
    print(f"SlowDown answers {thrown}; limiter signals {limiter.throttles}, limit "
          f"{start_limit} -> min {min(lim for _, lim in limiter.history):.2f}; most tries of "
          f"one put {most} (one layer's maximum {RetryPolicy().max_tries})")
    assert 2 <= most <= RetryPolicy().max_tries, stats["max_attempts"]


def test_old_task_rows_migrate_to_typed_specs():
    """Migration 0012 turns the untyped specs of queued and leased tasks into typed ones
    that read back strictly, with the control-only keys as columns."""
    import importlib.util
    path = ROOT / "dr_control/migrations/versions/0012_typed_task_specs.py"
    spec = importlib.util.spec_from_file_location("m0012", path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    old = {"plan": "plans/p", "cycle": "plans/p/cycles/3", "disk": "d1", "source_kind": "kvm",
           "source_site": "src", "source_locator": "/img/a.qcow2", "size_bytes": 1 << 30,
           "repository": {"kind": "fs", "path": "/repo", "site": "dst"},
           "chunk_size_bytes": MiB, "compression": "zstd", "previous_root_hash": "ab",
           "previous_bitmap": "hdr-p-2", "bitmap": "hdr-p-3", "source_snapshot_id": "",
           "previous_source_snapshot_id": "", "previous_snapshot_id": "",
           "checkpoint_interval_bytes": 500_000_000, "bandwidth_bytes_per_second": 0,
           "pair_site": "dst", "pair_node": "nodes/t1", "pair_address": "10.0.0.1:7443",
           "pair_cert_name": ""}
    new, cols = m.convert("replicate", old)
    assert cols == {"source_site": "src", "target_site": "dst", "pair_site": "dst"}
    msg = taskspecs.load(Task(id=1, kind="replicate", spec=new))
    assert msg.source.kvm.path == "/img/a.qcow2" and msg.source.kvm.bitmap == "hdr-p-3"
    assert msg.source.kvm.previous_bitmap == "hdr-p-2"
    assert msg.target.fs.path == "/repo" and msg.pair.node == "nodes/t1"
    assert (msg.size_bytes, msg.chunk_size_bytes, msg.compression) == (1 << 30, MiB, "zstd")

    snap, cols = m.convert("snapshot", {
        "plan": "plans/p", "cycle": "plans/p/cycles/3", "source_site": "aws1",
        "volumes": [{"disk": "d1", "instance_id": "i-1", "volume_id": "vol-1"}],
        "keep_snapshot_ids": ["snap-0"]})
    msg = taskspecs.load(Task(id=2, kind="snapshot", spec=snap))
    assert cols["source_site"] == "aws1" and msg.source.WhichOneof("kind") == "aws"
    assert (msg.disks[0].workload, msg.disks[0].locator) == ("i-1", "vol-1")

    gc, cols = m.convert("gc", {"repository": {"kind": "s3", "path": "s3://b/p", "site": "a"},
                                "grace_seconds": 60})
    msg = taskspecs.load(Task(id=3, kind="gc", spec=gc))
    assert msg.target.s3.location == "s3://b/p" and cols["target_site"] == "a"
    with pytest.raises(ValueError):
        m.convert("replicate", {**old, "source_kind": "hyper-v"})
    # ... and a downgrade gives the old form back.
    new, cols = m.convert("replicate", old)
    back = m.revert("replicate", new, cols)
    for key in ("plan", "disk", "source_kind", "source_site", "source_locator", "bitmap",
                "previous_bitmap", "repository", "pair_site", "pair_node", "pair_address",
                "size_bytes", "chunk_size_bytes"):
        assert back[key] == old[key], key
