"""Recovery into vSphere against the vSphere peer (vcsim behind tests/peers/vsphere/'s
front, driven through pyvmomi): a point of a `file` source, protected into an `fs`
repository by the real daemons, is recovered in a test drill — its disks uploaded to a
datastore by a node restore task, a VM created on them with its NIC on the isolated port
group, powered on — and cleaned up without a trace; the node-side writer uploads and
verifies a flat disk on its own; and wrong input (a wrong password, an unknown
datacenter, a datastore without space) fails with the field to fix, creating nothing."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dr_common.errors import InvalidArgument, PermissionDenied
from dr_common.proto.dr.v1 import common_pb2, nodes_pb2
from dr_common.repository import Repository
from dr_common.repository.store import FsStore
from dr_common.targets.base import TargetEnv
from dr_common.targets.repository import RepositoryTarget
from dr_common.vsphere import Session, VsphereSettings
from dr_control.recovery.base import BootGroup, RecoveredDisk, WorkloadSpec
from dr_control.recovery.vsphere import VsphereProvider, check_settings, upload_dir, vm_name
from tests.helpers.cluster import setup_plan
from tests.helpers.disks import MiB, make_disk
from tests.helpers.repository import CHUNK, numbered_chunk, write_point
from tools.localcluster import Cluster

ISOLATED = "DC0_DVPG0"  # vcsim's distributed port group: the drill's isolated network
PRODUCTION = "VM Network"


def settings_of(peer, **kw) -> VsphereSettings:
    return VsphereSettings(**{"url": peer.url, "user": peer.user, "password": peer.password,
                              "thumbprint": peer.thumbprint_sha256, **kw})


def vms(peer) -> dict[str, dict]:
    with Session(settings_of(peer)) as s:
        from pyVmomi import vim
        return {p["name"]: p for _, p in s.retrieve(
            vim.VirtualMachine, ["name", "runtime.powerState", "config.annotation"])}


def datastore_dirs(peer, pattern: str = "hybrid-dr-*") -> list[str]:
    """What the datastore holds under our prefix, as vSphere's datastore browser lists it."""
    from pyVmomi import vim
    with Session(settings_of(peer)) as s:
        (ds, _), = [d for d in s.retrieve(vim.Datastore, ["name"]) if d[1]["name"] == peer.datastore]
        browser = s.get(ds, ["browser"])["browser"]
        result = s.call("search", browser.SearchDatastore_Task,
                        datastorePath=f"[{peer.datastore}]",
                        searchSpec=vim.host.DatastoreBrowser.SearchSpec(matchPattern=[pattern]))
        return sorted(f.path for f in (result.file or []))


# --- the node-side writer, on its own -----------------------------------------------------

async def test_a_point_disk_is_uploaded_as_a_flat_vmdk_and_verified(vsphere_peer, tmp_path):
    repo = await Repository.open_or_create(FsStore(tmp_path / "repo", durable=False))
    # Data, a zero chunk in the middle (it must be sent: a flat file has no holes), data.
    chunks = [1, 2, 0, 3] + [0] * 5 + [4]
    await write_point(repo, "pt1", {"d": chunks})
    disk = (await repo.get_recovery_point("pt1")).disks[0]
    spec = nodes_pb2.RestoreSpec(recovery_point="plans/p/recoveryPoints/pt1", disk="d",
                                 root_hash=disk.root_hash, destination=nodes_pb2.RestoreDestination(
                                     vsphere=nodes_pb2.VsphereDatastoreFile(
                                         datacenter="DC0", datastore=vsphere_peer.datastore,
                                         path="hybrid-dr-test/w/disk-0.vmdk")))
    spec.destination.site.vsphere.CopyFrom(common_pb2.VsphereSettings(
        url=vsphere_peer.url, user=vsphere_peer.user, password=vsphere_peer.password,
        thumbprint=vsphere_peer.thumbprint_sha256))
    seen = []

    async def progress(done, total):
        seen.append((done, total))

    with ThreadPoolExecutor(4) as pool:
        target = RepositoryTarget(repo, name="fs:test", env=TargetEnv(executor=pool, window=4))
        result = await target.restore(spec, progress)
    expected = b"".join(numbered_chunk(n) for n in chunks)
    assert result.datastore_path == f"[{vsphere_peer.datastore}] hybrid-dr-test/w/disk-0.vmdk"
    assert result.bytes_written == len(expected) and "chunks read back" in result.verified
    assert seen[-1] == (len(expected), len(expected))
    with Session(settings_of(vsphere_peer)) as s:
        url = s.files.url(f"[{vsphere_peer.datastore}] hybrid-dr-test/w/disk-0-flat.vmdk", "DC0")
        got = bytearray(len(expected))
        assert s.files.read_into(url, 0, memoryview(got)) == len(expected)
        assert bytes(got) == expected
        resp = s.files.request("GET", s.files.url(
            f"[{vsphere_peer.datastore}] hybrid-dr-test/w/disk-0.vmdk", "DC0"))
        text = resp.read().decode()
    assert 'createType="monolithicFlat"' in text
    assert f'RW {len(expected) // 512} FLAT "disk-0-flat.vmdk" 0' in text
    # Every byte was put, zeros included.
    received = vsphere_peer.stats()["received"]
    assert sum(v for k, v in received.items() if k.endswith("disk-0-flat.vmdk")) == len(expected)
