"""Recovery to a kvm site with real QEMU (TCG) and the tiny guest (tests/peers/kvm): two
`file` workloads whose disks hold ext4 filesystems with known files are protected into
an `fs` repository by the real daemons and recovered at a kvm site as a two-group test
drill — the node writes each disk as a qcow2 in the site's directory (the `kvm` restore
destination), the provider starts a QEMU per workload, group after group, booting the
guest's kernel from its settings — and each VM serves its recovered files, byte for
byte, on its forwarded loopback port; cleanup stops QEMU and removes the directory.
Wrong settings are refused naming the field, and check() creates nothing."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from dr_common.errors import DRError, InvalidArgument
from dr_control.recovery.base import BootGroup, RecoveredDisk, WorkloadSpec
from dr_control.recovery.kvm import KvmProvider, execution_dir, vm_name
from tests.helpers.cluster import completed_execution
from tests.helpers.kvmrecovery import APPEND, alive, ext4_image, http_get, pid_of
from tests.peers.kvm import initramfs
from tests.peers.kvm.guest import require_guest
from tests.peers.tools import free_port

MiB = 1 << 20


def _refused(settings: dict, field: str, *, where: str = "w") -> str:
    with pytest.raises(InvalidArgument) as e:
        KvmProvider.check_workload(where, settings)
    assert e.value.field == field, (e.value.field, e.value.message)
    return e.value.message


def test_bad_settings_are_refused_naming_the_field_and_check_creates_nothing(tmp_path):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"k")
    assert "known: cpus" in _refused({"kvm": {"cpu": 2}}, "w.kvm.cpu")
    _refused({"kvm": {"cpus": 0.5}}, "w.kvm.cpus")
    _refused({"kvm": {"memory_mib": "lots"}}, "w.kvm.memory_mib")
    _refused({"kvm": {"networks": [{"network": "no such/bridge"}]}}, "w.kvm.networks[0].network")
    _refused({"kvm": {"networks": [{"network": "user", "forwards": ["8080:80"]}]}},
             "w.kvm.networks[0].forwards[0]")
    _refused({"kvm": {"networks": [{"network": "br0", "forwards": ["tcp::8080-:80"]}]}},
             "w.kvm.networks[0].forwards")
    assert "not a file" in _refused({"kvm": {"kernel": str(tmp_path / "none")}}, "w.kvm.kernel")
    _refused({"kvm": {"initrd": str(kernel)}}, "w.kvm.initrd")  # without a kernel
    _refused({"kvm": {"accel": "xen"}}, "w.kvm.accel")
    _refused({"kvm": {"wait_for": "http"}}, "w.kvm.wait_for")  # nothing forwarded
    _refused({"vsphere": {"datastore": "ds"}}, "w.vsphere")  # another provider's
    _refused({"instance_type": "t3.small"}, "w.instance_type")
    ok = KvmProvider.check_workload("w", {"kvm": {
        "memory_mib": "256", "kernel": str(kernel), "append": "quiet",
        "networks": [{"network": "user", "forwards": ["tcp:127.0.0.1:8080-:80"]}]}})["kvm"]
    assert ok == {"cpus": 1, "memory_mib": 256, "kernel": str(kernel), "initrd": "",
                  "append": "quiet", "accel": "tcg", "wait_for": "running",
                  "networks": [{"source": "", "network": "user",
                                "forwards": ["tcp:127.0.0.1:8080-:80"]}]}
    with pytest.raises(InvalidArgument) as e:  # one host port, two VMs
        KvmProvider.check_plan_settings([("a", {"kvm": ok}), ("b", {"kvm": ok})])
    assert e.value.field == "b.kvm.networks"

    # check(): a host port already taken is refused before anything is made.
    site = tmp_path / "site"
    site.mkdir()
    busy = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", busy))
        s.listen()
        taken = {**ok, "networks": [{"source": "", "network": "user",
                                     "forwards": [f"tcp:127.0.0.1:{busy}-:80"]}]}
        spec = WorkloadSpec("sites/s/workloads/w", (RecoveredDisk("", "", MiB, disk="d",
                                                                  root_hash="h"),),
                            settings={"kvm": taken})
        provider = KvmProvider({"path": str(site)}, KvmProvider.new_limiter())
        with pytest.raises(InvalidArgument) as e:
            asyncio.run(provider.check("recoveryPlans/r/executions/e", [BootGroup("g", (spec,))],
                                       test_mode=True))
        assert e.value.field == "kvm.networks" and str(busy) in e.value.message
    assert list(site.iterdir()) == []
    # A point without repository manifests (an ebs point) is not one KVM recovery writes.
    spec = WorkloadSpec("sites/s/workloads/w", (RecoveredDisk("", "snap-1", MiB, disk="d"),),
                        settings={"kvm": ok})
    with pytest.raises(DRError, match="repository manifest"):
        asyncio.run(provider.check("recoveryPlans/r/executions/e", [BootGroup("g", (spec,))]))
    assert list(site.iterdir()) == []


def test_a_vm_qemu_refuses_fails_with_what_qemu_said_and_cleanup_removes_it(tmp_path):
    """A kernel QEMU cannot load: recover fails naming the VM and quoting QEMU, leaves
    what it made in the execution's directory, and cleanup removes it all."""
    require_guest()
    site = Path(tempfile.mkdtemp(prefix="kvu-", dir="/tmp"))
    try:
        kernel = tmp_path / "vmlinuz"
        kernel.write_bytes(b"not a kernel" * 100)
        execution, workload = "recoveryPlans/r/executions/e", "sites/s/workloads/w"
        settings = KvmProvider.check_workload("w", {"kvm": {"memory_mib": 64,
                                                           "kernel": str(kernel)}})
        spec = WorkloadSpec(workload, (RecoveredDisk("", "", MiB, disk="d", root_hash="h"),),
                            settings=settings)
        disk = execution_dir(str(site), execution) / "w" / "disk-0.qcow2"
        disk.parent.mkdir(parents=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1M"], check=True)
        provider = KvmProvider({"path": str(site)}, KvmProvider.new_limiter())
        events = []
        with pytest.raises(DRError) as e:
            asyncio.run(provider.recover(execution, [BootGroup("g", (spec,))], test_mode=True,
                                         on_event=events.append, running_timeout=30))
        assert "QEMU did not start VM " + vm_name(execution, workload) in e.value.message
        assert "kernel" in e.value.message.lower()  # what QEMU said
        deleted = asyncio.run(provider.cleanup(execution, on_event=events.append))
        assert deleted == {"vms": [], "disks": [str(disk)],
                           "directories": [str(execution_dir(str(site), execution))]}
        assert list(site.iterdir()) == []
        # Nothing left: a second cleanup finds nothing.
        assert asyncio.run(provider.cleanup(execution, on_event=events.append)) == {
            "vms": [], "disks": [], "directories": []}
    finally:
        shutil.rmtree(site, ignore_errors=True)


@pytest.mark.e2e
def test_a_two_group_drill_boots_recovered_disks_that_serve_the_points_files(short_cluster):
    require_guest()
    c = short_cluster
    rnd = random.Random(5)
    files = {"db": {"rows.bin": rnd.randbytes(40_000), "README": b"the db disk\n"},
             "web": {"index.html": b"<h1>recovered</h1>\n", "blob": rnd.randbytes(123_457)}}
    for w, content in files.items():
        ext4_image(c.src / f"{w}.img", content)
    c.drctl("site", "add", "src", "--kind", "file", "--path", str(c.src))
    c.drctl("site", "add", "dst", "--kind", "file", "--path", str(c.repo))
    c.drctl("plan", "create", "p1", "--source", "src", "--target", "dst",
            "--workload", "src/db", "--workload", "src/web", "--rpo", "1h")
    c.drctl("plan", "run", "p1", "--wait")
    (point,) = c.points("p1")
    # Changed after the point: the recovered VMs must not serve this.
    for w in files:
        with open(c.src / f"{w}.img", "r+b") as f:
            f.write(bytes(4096))
    site = c.root / "kvm"
    site.mkdir()
    code, _, err = c.drctl("site", "add", "rs", "--kind", "kvm", "--path", str(site))
    assert code == 0, err

    ports = {"db": free_port(), "web": free_port()}

    def workload(w: str) -> dict:
        return {"workload": f"sites/src/workloads/{w}", "tags": {"team": "storefront"},
                "kvm": {"cpus": 1, "memory_mib": 256, "kernel": str(initramfs.kernel()),
                        "initrd": str(initramfs.initrd()), "append": APPEND,
                        "wait_for": "http",
                        "networks": [{"network": "user",
                                      "forwards": [f"tcp:127.0.0.1:{ports[w]}-:80"]}]}}

    plan = {"protection_plan": "plans/p1", "recovery_site": "sites/rs", "boot_groups": [
        {"name": "databases", "workloads": [workload("db")]},
        {"name": "web", "workloads": [workload("web")]}]}
    (c.root / "rp.json").write_text(json.dumps(plan))
    code, _, err = c.drctl("recovery-plan", "create", "rp1", "--from-file",
                           str(c.root / "rp.json"))
    assert code == 0, err
    shown = c.drctl_json("recovery-plan", "get", "rp1")
    assert shown["boot_groups"][0]["workloads"][0]["kvm"]["accel"] == "tcg"
    table = c.drctl("recovery-plan", "get", "rp1")[1]
    assert "1 vCPU 256 MiB" in table and "-:80" in table

    started = time.monotonic()
    name = c.drctl_json("recovery", "run", "rp1", "--test")["name"]
    short = name.split("/", 1)[1].replace("executions/", "")
    execution = completed_execution(c, short, point)
    recover_seconds = time.monotonic() - started
    steps = [(e["group"], e["workload"].rsplit("/", 1)[-1], e["step"])
             for e in execution["events"]]
    group1_up = steps.index(("databases", "", "group-running"))
    assert steps.index(("databases", "db", "instance-running")) < group1_up
    assert steps.index(("web", "web", "instance-launched")) > group1_up
    recovered = {i["workload"].rsplit("/", 1)[-1]: i for i in execution["instances"]}
    root = execution_dir(str(site), name)
    pids = {}
    for w, content in files.items():
        got = recovered[w]
        assert got["instance_id"] == vm_name(name, f"sites/src/workloads/{w}")
        assert got["state"] == "running"
        assert got["volume_ids"] == [str(root / w / "disk-0.qcow2")]
        # The guest mounted the recovered disk at /data/a and serves it as /a/.
        for file_name, data in content.items():
            assert http_get(ports[w], f"/a/{file_name}") == data, f"{w}: {file_name} differs"
        pids[w] = pid_of(root / w / "qemu.pid")
        cmdline = Path(f"/proc/{pids[w]}/cmdline").read_bytes().split(b"\0")
        assert b"restrict=on" in b",".join(cmdline)  # a drill's network is isolated

    code, out, err = c.drctl("recovery", "cleanup", short, "--wait", "--output", "json")
    assert code == 0, err
    cleaned = json.loads(out)
    assert cleaned["state"] == "cleaned-up"
    assert [e["step"] for e in cleaned["events"]][-3:] == [
        "cleanup-instances", "cleanup-disks", "cleanup-directories"]
    for pid in pids.values():
        assert not alive(pid), f"QEMU {pid} still runs"
    assert not root.exists() and list(site.iterdir()) == []
    # The recovery point is kept.
    assert [p["name"] for p in c.points("p1")] == [point["name"]]
    print(f"recovered 2 groups in {recover_seconds:.1f} s")
