"""Recovery orchestration at a kvm site, end to end with the real daemons, real QEMU (TCG)
and the tiny guest (tests/peers/kvm): boot groups validated one after another, checks
and scripts deciding completed against partially-completed, cancel, and dr-control
SIGKILLed mid-execution resuming without starting anything twice.

The workloads are `file` disks holding ext4 filesystems with known files, protected into
an `fs` repository; each recovered VM mounts its disk and serves it over HTTP on a
forwarded loopback port, which is what the validation checks ask."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess

import pytest

from dr_control.recovery.kvm import execution_dir, vm_name
from tests.helpers.kvmrecovery import APPEND, alive, ext4_image, http_get
from tests.peers.kvm import initramfs
from tests.peers.kvm.check import check_point, expected
from tests.peers.kvm.guest import Guest, make_disk, require_guest
from tests.peers.tools import free_port, require_qemu
from tools.localcluster import Cluster, wait_for

pytestmark = pytest.mark.e2e
KIB = 64  # the writing guest's file size


@pytest.fixture(autouse=True)
def _tools():
    require_qemu()
    require_guest()


class Site:
    """A file source of ext4 disks protected into a repository, and a kvm recovery site."""

    def __init__(self, c: Cluster, files: dict[str, dict[str, bytes]], size: int = 16 << 20):
        self.c, self.files = c, files
        for w, content in files.items():
            ext4_image(c.src / f"{w}.img", content, size=size)
        c.drctl("site", "add", "src", "--kind", "file", "--path", str(c.src))
        c.drctl("site", "add", "dst", "--kind", "file", "--path", str(c.repo))
        c.drctl("plan", "create", "p1", "--source", "src", "--target", "dst", "--rpo", "1h",
                *(x for w in files for x in ("--workload", f"src/{w}")))
        c.drctl("plan", "run", "p1", "--wait")
        (self.point,) = c.points("p1")
        for w in files:  # changed after the point: a recovered VM must not serve this
            with open(c.src / f"{w}.img", "r+b") as f:
                f.write(bytes(4096))
        self.dir = c.root / "kvm"
        self.dir.mkdir()
        c.drctl("site", "add", "rs", "--kind", "kvm", "--path", str(self.dir))
        self.ports = {w: free_port() for w in files}

    def workload(self, w: str, checks: list[dict] = (), **extra) -> dict:
        return {"workload": f"sites/src/workloads/{w}", "checks": list(checks),
                "kvm": {"cpus": 1, "memory_mib": 256, "kernel": str(initramfs.kernel()),
                        "initrd": str(initramfs.initrd()), "append": APPEND,
                        "networks": [{"network": "user",
                                      "forwards": [f"tcp:127.0.0.1:{self.ports[w]}-:80"]}]},
                **extra}

    def http_check(self, w: str, path: str, body: str, **extra) -> dict:
        return {"kind": "http", "url": f"http://{{address}}:{self.ports[w]}{path}",
                "body_contains": body, **extra}

    def create(self, groups: list[dict], **extra) -> None:
        plan = {"protection_plan": "plans/p1", "recovery_site": "sites/rs",
                "boot_groups": groups, **extra}
        path = self.c.root / "rp.json"
        path.write_text(json.dumps(plan))
        code, _, err = self.c.drctl("recovery-plan", "create", "rp1", "--from-file", str(path))
        assert code == 0, err

    def run(self, mode: str) -> str:
        return self.c.drctl_json("recovery", "run", "rp1", f"--{mode}")["name"]

    def run_interrupted(self, mode: str, step: str, group: str) -> tuple[str, int, dict]:
        """Starts an execution, SIGKILLs dr-control once `step` of `group` happened and
        starts it again; returns the execution's name, the pid the database's VM had
        then, and the execution once it has ended."""
        name = self.run(mode)
        self.wait_step(name, step, group)
        (pid,) = self.qemus(name, "db")
        kill_control(self.c)
        return name, pid, self.wait_end(name)

    def get(self, name: str) -> dict:
        return self.c.drctl_json("recovery", "get", short(name))

    def wait_step(self, name: str, step: str, group: str = "", timeout: float = 120) -> dict:
        def seen():
            e = self.get(name)
            assert e["state"] not in ("failed", "cancelled"), e
            return e if any(v["step"] == step and v["group"] == group
                            for v in e["events"]) else None
        return wait_for(seen, timeout=timeout, interval=0.1, what=f"{step} {group}")

    def wait_end(self, name: str) -> dict:
        code, out, err = self.c.drctl("recovery", "get", short(name), "--wait",
                                      "--output", "json", check=False)
        assert out, err
        return json.loads(out)

    def qemus(self, name: str, w: str) -> list[int]:
        """Every QEMU process running this execution's VM of workload w."""
        want = str(execution_dir(str(self.dir), name) / w)
        out = subprocess.run(["pgrep", "-f", f"qemu-system-x86_64.*{want}/"],
                             capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def cleanup(self, name: str, pids: list[int]) -> None:
        code, out, err = self.c.drctl("recovery", "cleanup", short(name), "--wait",
                                      "--output", "json", check=False)
        assert code == 0, err
        assert json.loads(out)["state"] == "cleaned-up"
        for pid in pids:
            assert not alive(pid), f"QEMU {pid} still runs"
        # No VM, no disk, no directory left (user networking: no network object exists).
        assert list(self.dir.iterdir()) == []


def short(name: str) -> str:
    return name.split("/", 1)[1].replace("executions/", "")


def steps(execution: dict) -> list[tuple[str, str, str]]:
    return [(e["group"], e["workload"].rsplit("/", 1)[-1], e["step"])
            for e in execution["events"]]


def kill_control(c: Cluster) -> None:
    c.control.send_signal(signal.SIGKILL)
    c.control.wait(30)
    c.start_control()


def test_a_drill_validates_each_group_before_the_next_and_resumes_after_sigkill(short_cluster):
    """Three workloads in two boot groups: the web group starts only once the database's
    HTTP check passed; every VM serves the point's files; dr-control SIGKILLed while the
    second group boots resumes it without a second QEMU or a second script run; the post
    script gets the recovered workloads as JSON; cleanup leaves nothing."""
    c = short_cluster
    rnd = random.Random(16)
    files = {"db": {"README": b"the db disk\n", "rows.bin": rnd.randbytes(30_000)},
             "web1": {"index.html": b"<h1>web one</h1>\n"},
             "web2": {"index.html": b"<h1>web two</h1>\n", "blob": rnd.randbytes(70_001)}}
    site = Site(c, files)
    post = c.root / "post.json"
    site.create([
        {"name": "databases", "workloads": [
            site.workload("db", [site.http_check("db", "/a/README", "the db disk")])]},
        {"name": "web", "workloads": [
            site.workload("web1", [site.http_check("web1", "/a/index.html", "web one"),
                                   {"kind": "tcp", "port": site.ports["web1"]}]),
            site.workload("web2", [site.http_check("web2", "/a/index.html", "web two")])]}],
        post_scripts=[{"command": f"cat >> {post}; echo >> {post}; echo posted"}])
    name, db_pid, execution = site.run_interrupted("test", "group-started", "web")
    assert execution["state"] == "completed", execution
    got = steps(execution)
    assert ("", "", "resumed") in got
    # Group 2 started after group 1 passed its checks.
    assert got.index(("databases", "db", "validation-passed")) < \
        got.index(("databases", "", "group-validated")) < got.index(("web", "", "group-started")) \
        < got.index(("web", "web1", "instance-launched"))
    # Nothing launched twice: one QEMU per workload, the database's the same process.
    assert site.qemus(name, "db") == [db_pid]
    pids = [db_pid]
    for w, content in files.items():
        (pid,) = site.qemus(name, w)
        pids.append(pid)
        for file_name, data in content.items():
            assert http_get(site.ports[w], f"/a/{file_name}") == data, f"{w}: {file_name}"
    results = {r["workload"].rsplit("/", 1)[-1]: r for r in execution["workloads"]}
    assert {w: r["state"] for w, r in results.items()} == {w: "validated" for w in files}
    assert [ch["passed"] for ch in results["web1"]["checks"]] == [True, True]
    # The post script ran once, with every workload's name, id and address.
    lines = post.read_text().split("\n\n")
    assert len([x for x in lines if x.strip()]) == 1, post.read_text()
    payload = json.loads(lines[0])
    assert payload["execution"] == name and payload["mode"] == "test"
    assert payload["recovery_point"] == site.point["name"]
    assert {w["name"]: (w["instance_id"], w["address"]) for w in payload["workloads"]} == {
        w: (vm_name(name, f"sites/src/workloads/{w}"), "127.0.0.1") for w in files}
    assert any(e["step"] == "script-completed" and "posted" in e["detail"]
               for e in execution["events"])
    # The RTO forecast stands on this execution: its parts, beside its measured RTO.
    forecast = c.drctl_json("recovery-plan", "forecast", "rp1")
    assert forecast["last_execution"] == name
    assert int(forecast["restore_bytes"]) == 3 * 16 * (1 << 20)
    parts = sum(forecast.get(k, 0) for k in (
        "restore_seconds", "provider_seconds", "validation_seconds", "script_seconds",
        "delay_seconds", "overhead_seconds"))
    assert forecast["rto_seconds"] == pytest.approx(parts, rel=1e-6)
    assert forecast["last_measured_rto_seconds"] > 0
    code, text, err = c.drctl("recovery-plan", "forecast", "rp1", check=False)
    assert code == 0 and "forecast RTO" in text and "last measured RTO" in text, err
    # Refresh runs the checks again: web2's VM is gone, the others still pass.
    (web2_pid,) = site.qemus(name, "web2")
    os.kill(web2_pid, signal.SIGKILL)
    refreshed = c.drctl_json("recovery", "refresh", short(name))
    now = {r["workload"].rsplit("/", 1)[-1]: r["state"] for r in refreshed["workloads"]}
    assert now == {"db": "validated", "web1": "validated", "web2": "validation-failed"}
    assert refreshed["events"][-1]["step"] == "refreshed"
    site.cleanup(name, pids)


def test_a_failing_check_and_a_failing_script_make_a_failover_partially_completed(
        short_cluster):
    """A failover whose database fails its check: the web group is not started, the
    plan's post script (exit 3) still gets the JSON, and the execution is
    partially-completed with the reason per workload. dr-control SIGKILLed while the
    check retries resumes it without a second VM; the plan is marked failed over."""
    c = short_cluster
    site = Site(c, {"db": {"README": b"the db disk\n"}, "web": {"index.html": b"web\n"}})
    post = c.root / "post.json"
    site.create([
        {"name": "databases", "workloads": [site.workload("db", [
            site.http_check("db", "/a/README", "not in the file", retries=8,
                            interval_seconds=1, timeout_seconds=2)])]},
        {"name": "web", "workloads": [site.workload("web")]}],
        post_scripts=[{"command": f"cat >> {post}; echo failing on purpose; exit 3"}])
    name, db_pid, execution = site.run_interrupted("failover", "group-running", "databases")
    assert execution["state"] == "partially-completed", execution
    assert site.qemus(name, "db") == [db_pid]
    assert site.qemus(name, "web") == []
    results = {r["workload"].rsplit("/", 1)[-1]: r for r in execution["workloads"]}
    assert results["db"]["state"] == "validation-failed"
    assert "not in the file" in results["db"]["reason"]
    assert results["web"]["state"] == "not-started"
    assert "databases" in results["web"]["reason"]
    failed = [e for e in execution["events"] if e["step"] == "script-failed"]
    assert len(failed) == 1 and "exit 3" in failed[0]["detail"] \
        and "failing on purpose" in failed[0]["detail"]
    payload = json.loads(post.read_text())
    assert payload["mode"] == "failover"
    assert [w["name"] for w in payload["workloads"]] == ["db", "web"]
    assert "post script" in execution["error"]["message"]
    assert "failed validation" in execution["error"]["message"]
    # A failover pauses the protection plan and says so on the recovery plan.
    assert c.drctl_json("recovery-plan", "get", "rp1")["failed_over_by"] == name
    assert c.drctl_json("plan", "status", "p1")["plan"]["paused"] is True
    site.cleanup(name, [db_pid])


def test_cancel_stops_at_the_next_step_and_deletes_what_was_made(short_cluster):
    """Cancelled while the second group waits out its delay: the execution stops there,
    stops the first group's VM, removes its disks, and ends cancelled."""
    c = short_cluster
    site = Site(c, {"db": {"README": b"db\n"}, "web": {"index.html": b"web\n"}})
    site.create([{"name": "databases", "workloads": [site.workload("db")]},
                 {"name": "web", "delay_seconds": 600, "workloads": [site.workload("web")]}])
    name = site.run("test")
    site.wait_step(name, "group-delayed", "web")
    (db_pid,) = site.qemus(name, "db")
    code, out, err = c.drctl("recovery", "cancel", short(name), "--wait", "--output", "json",
                             check=False)
    assert code == 0, err
    execution = json.loads(out)
    assert execution["state"] == "cancelled" and execution["done"]
    got = [s for _, _, s in steps(execution)]
    assert got.index("cancel-requested") < got.index("cleanup-instances") < \
        got.index("cancelled")
    assert "group-started" not in [s for g, _, s in steps(execution) if g == "web"]
    assert not alive(db_pid)
    assert list(site.dir.iterdir()) == []
    assert execution["instances"] == [] or all(
        i["state"] == "terminated" for i in execution["instances"])
    # Cancelling an ended execution changes nothing.
    assert c.drctl_json("recovery", "cancel", short(name))["state"] == "cancelled"


def test_migrating_a_running_guest_loses_nothing_it_wrote_and_resumes_after_sigkill(
        short_cluster):
    """A guest writing fsynced files, protected through QMP, migrated to the kvm site:
    the plan is paused, the guest paused through its source site, a final cycle reads it,
    and the VM recovered from that point holds exactly the files the paused guest had
    written — the last one included. dr-control SIGKILLed during the final cycle resumes
    it without a second cycle or a second VM."""
    c = short_cluster
    disk = make_disk(c.root / "vm1-a.qcow2")
    guest = Guest([disk], c.root / "guest", qmp_socket=c.src / "vm1.qmp", rate=5, kib=KIB)
    with guest:
        c.drctl("site", "add", "hv", "--kind", "kvm", "--path", str(c.src))
        c.drctl("site", "add", "dst", "--kind", "file", "--path", str(c.repo))
        wait_for(lambda: guest.count() >= 2, timeout=60, what="the guest writing")
        c.drctl("plan", "create", "p1", "--source", "hv", "--target", "dst", "--workload",
                "hv/vm1", "--rpo", "1h")
        c.drctl("plan", "run", "p1", "--wait")
        site_dir = c.root / "kvm"
        site_dir.mkdir()
        c.drctl("site", "add", "rs", "--kind", "kvm", "--path", str(site_dir))
        port = free_port()
        workload = {"workload": "sites/hv/workloads/vm1", "checks": [
            {"kind": "http", "url": f"http://{{address}}:{port}/count"}],
            "kvm": {"memory_mib": 256, "kernel": str(initramfs.kernel()),
                    "initrd": str(initramfs.initrd()), "append": APPEND,
                    "networks": [{"network": "user",
                                  "forwards": [f"tcp:127.0.0.1:{port}-:80"]}]}}
        (c.root / "rp.json").write_text(json.dumps({
            "protection_plan": "plans/p1", "recovery_site": "sites/rs",
            "boot_groups": [{"name": "all", "workloads": [workload]}]}))
        c.drctl("recovery-plan", "create", "rp1", "--from-file", str(c.root / "rp.json"))
        before = guest.count()
        name = c.drctl_json("recovery", "run", "rp1", "--migrate")["name"]
        wait_for(lambda: any(e["step"] == "final-cycle-started" for e in c.drctl_json(
            "recovery", "get", short(name))["events"]), interval=0.05, what="the final cycle")
        kill_control(c)
        code, out, err = c.drctl("recovery", "get", short(name), "--wait", "--output",
                                 "json", check=False)
        execution = json.loads(out)
        assert execution["state"] == "completed", err
        # The source is paused: what its disk holds now is all it ever wrote.
        assert guest.qmp("query-status")["status"] == "paused"
        frozen = c.root / "frozen.qcow2"
        subprocess.run(["qemu-img", "convert", "-U", "-O", "qcow2", str(disk), str(frozen)],
                       check=True)
        at_stop = check_point(frozen, "a").count
        assert at_stop >= before
        cycles = c.cycles("p1")
        assert len(cycles) == 2, cycles  # the first, and one final cycle despite the kill
        point = cycles[-1]["recovery_point"]
        assert execution["recovery_point"] == point
        got = steps(execution)
        assert ("", "", "resumed") in got
        assert got.index(("", "", "final-cycle-completed")) < got.index(
            ("all", "", "group-started"))
        assert c.drctl_json("plan", "status", "p1")["plan"]["paused"] is True
        # The recovered VM counts the files complete on its disk at boot.
        assert int(http_get(port, "/count")) == at_stop
        assert http_get(port, f"/a/{at_stop:06d}") == expected("a", at_stop, KIB)
        root = execution_dir(str(site_dir), name)
        pids = subprocess.run(["pgrep", "-f", f"qemu-system-x86_64.*{root}/"],
                              capture_output=True, text=True).stdout.split()
        assert len(pids) == 1, pids
        code, _, err = c.drctl("recovery", "cleanup", short(name), "--wait", check=False)
        assert code == 0, err
        assert list(site_dir.iterdir()) == []


def test_failback_brings_what_the_recovered_guest_wrote_home(short_cluster):
    """A `file` workload failed over to the kvm site, where the recovered guest writes
    files; failback protects it back into the plan's repository (its first cycle stores
    only what the repository lacked: the chunks the guest's writes touched, not the 8 MiB
    file it already held), pauses it, and writes its disk over the original image: the original site
    ends with every file the guest wrote, the plan protects it again, and the failover's
    VM is gone."""
    c = short_cluster
    big = random.Random(7).randbytes(8 << 20)
    site = Site(c, {"w": {"big.bin": big}}, size=48 << 20)
    writing = APPEND.replace("dr.write=0", "dr.write=1 dr.rate=5 dr.kib=64")
    workload = site.workload("w", [site.http_check("w", "/count", "")])
    workload["kvm"]["append"] = writing
    site.create([{"name": "all", "workloads": [workload]}])
    failover = site.run("failover")
    ended = site.wait_end(failover)
    assert ended["state"] == "completed", ended["error"]
    wait_for(lambda: int(http_get(site.ports["w"], "/count")) >= 3, timeout=60,
             what="the recovered guest writing")
    written = int(http_get(site.ports["w"], "/count"))
    name = site.run("failback")
    # dr-control SIGKILLed while the reverse plan's first cycle runs: resumed, it waits
    # for that cycle instead of starting another, and creates no second plan.
    site.wait_step(name, "reverse-cycle-started")
    kill_control(c)
    execution = site.wait_end(name)
    assert execution["state"] == "completed", execution["error"]
    assert ("", "", "resumed") in steps(execution)
    assert sorted(p["name"] for p in c.drctl_json("plan", "list")) == [
        "plans/p1", "plans/p1-back-1"]
    assert len(c.cycles("p1-back-1")) == 2  # the first, while it ran; the final one
    assert [w["state"] for w in execution["workloads"]] == ["written-back"]
    (first,) = [e["detail"] for e in execution["events"]
                if e["step"] == "reverse-cycle-completed"]
    read, sent, stored = (int(x) for x in re.findall(r"(?:read|sent|stored) (\d+)", first))
    # Every allocated block is read (the recovered VM has no tracking relative to the
    # original point) but the repository keeps only the chunks the guest changed.
    assert read >= len(big) and stored < min(read // 2, len(big)), first
    # Home: a clean filesystem with the disk's own file and every file the guest wrote.
    home = c.src / "w.img"
    assert check_point(home, "a", others={"big.bin": big}).count >= written
    reverse = c.points("p1-back-1")[-1]
    restored = c.root / "reverse.raw"
    c.drctl("restore", reverse["name"], "--to", str(restored))
    assert restored.read_bytes() == home.read_bytes()
    plan = c.drctl_json("plan", "status", "p1")["plan"]
    assert plan["paused"] is False
    assert c.drctl_json("recovery-plan", "get", "rp1").get("failed_over_by", "") == ""
    assert site.get(failover)["state"] == "cleaned-up"
    assert list(site.dir.iterdir()) == []
    code, _, err = c.drctl("plan", "run", "p1", "--wait", check=False)
    assert code == 0, err


def test_a_test_with_a_ttl_is_cleaned_up_by_itself_even_across_a_restart(short_cluster):
    """A drill with a TTL whose VM QEMU refuses (its kernel is not one) fails at once;
    dr-control SIGKILLed before the TTL ends still cleans it up when it is over."""
    c = short_cluster
    site = Site(c, {"db": {"README": b"db\n"}})
    workload = site.workload("db")
    not_a_kernel = c.root / "not-a-kernel"
    not_a_kernel.write_bytes(b"nothing to boot\n")
    workload["kvm"]["kernel"] = str(not_a_kernel)
    site.create([{"name": "databases", "workloads": [workload]}])
    code, out, err = c.drctl("recovery", "run", "rp1", "--test", "--ttl", "4s", "--output",
                             "json")
    name = json.loads(out)["name"]
    failed = site.wait_end(name)
    assert failed["state"] == "failed" and failed["expire_time"], failed
    assert (site.dir / execution_dir(str(site.dir), name).name).exists()
    kill_control(c)
    cleaned = wait_for(lambda: (lambda e: e if e["state"] == "cleaned-up" else None)(
        site.get(name)), timeout=60, what="the TTL's cleanup")
    assert "expired" in [s for _, _, s in steps(cleaned)]
    assert list(site.dir.iterdir()) == []
    # Only a test has a TTL.
    code, _, err = c.drctl("recovery", "run", "rp1", "--failover", "--ttl", "1h", check=False)
    assert code != 0 and "ttl_seconds" in err
