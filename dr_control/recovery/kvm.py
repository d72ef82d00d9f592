"""KVM recovery: QEMU VMs started at a kvm site from a repository point's disks.

A kvm site is a directory (its `path`) on a host with QEMU. As a recovery site, that
directory is where recovered VMs live, one directory per execution and workload:

    <site path>/hybrid-dr-<digest of the execution>/<workload>/
        disk-0.qcow2 ...   the point's disks, root disk first (prepare)
        qemu.pid qmp.sock serial.log qemu.stderr   the running VM's state (recover)
        execution          the execution's and workload's names, for a person reading

*prepare* has a node write each disk of the point there as a qcow2 image (the `kvm`
restore destination, dr_common/targets/restores/kvm.py: what `drctl restore --format
qcow2` makes), since nodes are what reach the repository. *recover* starts, per
workload, a `qemu-system-x86_64` process (`-daemonize -pidfile`, its QMP socket and
serial log in its directory) with its CPUs, memory, its disks as virtio-blk and one
virtio-net NIC per mapped network; a group is up when each of its VMs' QEMU runs and
QMP `query-status` says running (and, with wait_for "http", the guest answers HTTP on
its first forwarded TCP port), and only then does the next group start.

libvirt is not used for recovery (yet): a QEMU process per VM, found again by its
pidfile, is all recovery needs, and runs on hosts without libvirtd. TCG
(emulation) is the default accelerator, since it runs anywhere; "kvm" is a setting.

Networks: `user` is QEMU's user networking (NAT through the host, with forwarded host
ports, `tcp:127.0.0.1:8080-:80`); any other name is a host bridge (`-netdev bridge`,
through qemu-bridge-helper, which must allow it). Test mode (drills) isolates every
NIC: user networking gets `restrict=on` (the guest reaches nothing, not even the host;
forwarded ports still reach the guest, since that is how a drill is checked), and a
bridge NIC becomes a restricted user NIC without forwards, so the guest still has the
same NICs but meets nothing of production.

Everything is named after the execution, so nothing is kept but the directory:
a retried execution reuses a running VM it finds there (pidfile, and /proc/PID/cmdline
checked to be that VM's QEMU); `cleanup()` stops each VM (QMP `quit`, then SIGTERM, then
SIGKILL), and deletes the disks and the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from dr_common import names
from dr_common.errors import DRError, FailedPrecondition, InvalidArgument
from dr_common.proto.dr.v1 import nodes_pb2
from dr_common.qmp import Qmp
from dr_common.targets import REPOSITORY_KINDS
from dr_control.config import RecoveryLimits
from dr_control.recovery.base import (TAG_EXECUTION, TAG_TEST, TAG_WORKLOAD, BootGroup,
                                      DiskMover, EventSink, RecoveredInstance,
                                      RecoveryEvent, RecoveryFailed, RecoveryProvider,
                                      WorkloadSpec, prepare_disks, raise_group_failures,
                                      refuse_foreign, repository_workloads,
                                      whole_number)

log = structlog.get_logger()

PROVIDER = "kvm"
QEMU = "qemu-system-x86_64"
# The workload settings (RecoveryWorkload.kvm).
KVM_KEYS = ("cpus", "memory_mib", "networks", "kernel", "initrd", "append", "accel",
            "wait_for")
NETWORK_KEYS = ("source", "network", "forwards")
USER_NETWORK = "user"
ACCELS = ("tcg", "kvm")
WAIT_FOR = ("running", "http")
MAX_CPUS = 255  # QEMU's pc machine without an IOMMU
MAX_MEMORY_MIB = 1024 * 1024
DEFAULT_MEMORY_MIB = 1024
# hostfwd's syntax, PROTO:HOSTADDR:HOSTPORT-GUESTADDR:GUESTPORT (addresses may be empty).
FORWARD = re.compile(r"^(tcp|udp):([0-9.]*):(\d{1,5})-([0-9.]*):(\d{1,5})$")
# Linux interface names: at most 15 characters.
BRIDGE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
# A unix socket's path is at most 107 bytes (sun_path); QMP's lives in the VM's directory.
SOCKET_PATH_MAX = 107
# QEMU processes launched at once per site: each start is a fork and a few file opens,
# but under TCG a booting guest takes a core, so a burst of them slows every one.
STARTS_IN_FLIGHT = 4
# Disks written at once (each is a node task; nodes bound their own work too).
RESTORES_IN_FLIGHT = 4
POLL_FIRST = 0.1
POLL_CAP = 0.5  # a VM coming up is waited for; each poll is one QMP query
# How long a stopped VM gets to exit after QMP quit, then after SIGTERM.
QUIT_WAIT = 10.0
TERM_WAIT = 5.0
# How long a guest has to answer one probe of its forwarded port (TCG is slow; the next
# probe comes soon anyway).
PORT_PROBE_SECONDS = 2.0
SERIAL_TAIL = 2000
# QEMU's first process exits as soon as the VM is set up (a second or so); longer means
# it is stuck opening something (a disk on a hung mount).
LAUNCH_TIMEOUT = 60.0
MiB = 1 << 20


# --- the plan's settings ----------------------------------------------------------------

def _file(where: str, key: str, value: Any) -> str:
    path = str(value or "").strip()
    if path and not (os.path.isabs(path) and os.path.isfile(path)):
        raise InvalidArgument(f"{where}: kvm.{key} {path} is not a file (an absolute path "
                              f"on the recovery site's host)", field=f"{where}.kvm.{key}")
    return path


def _network(where: str, k: int, given: Any) -> dict[str, Any]:
    at = f"{where}.kvm.networks[{k}]"
    if not isinstance(given, dict):
        raise InvalidArgument(f"{where}: network {k + 1} is not an object", field=at)
    unknown = sorted(set(given) - set(NETWORK_KEYS))
    if unknown:
        raise InvalidArgument(f"{where}: unknown network setting {unknown[0]!r} (known: "
                              f"{', '.join(NETWORK_KEYS)})", field=f"{at}.{unknown[0]}")
    network = str(given.get("network", "")).strip()
    if network != USER_NETWORK and not BRIDGE.match(network):
        raise InvalidArgument(
            f"{where}: network {k + 1} is {network!r}: use \"user\" (QEMU user networking) "
            f"or the name of a host bridge", field=f"{at}.network")
    forwards = [str(f).strip() for f in given.get("forwards") or ()]
    if forwards and network != USER_NETWORK:
        raise InvalidArgument(f"{where}: ports are forwarded on user networks only; "
                              f"network {k + 1} is bridge {network}", field=f"{at}.forwards")
    for j, f in enumerate(forwards):
        m = FORWARD.match(f)
        if not m or not all(1 <= int(p) <= 65535 for p in (m[3], m[5])):
            raise InvalidArgument(
                f"{where}: forward {f!r} should be PROTO:HOSTADDR:HOSTPORT-GUESTADDR:"
                f"GUESTPORT, e.g. tcp:127.0.0.1:8080-:80", field=f"{at}.forwards[{j}]")
    return {"source": str(given.get("source", "")).strip(), "network": network,
            "forwards": forwards}


def check_settings(where: str, given: dict[str, Any]) -> dict[str, Any]:
    """RecoveryWorkload.kvm, checked and normalized (defaults filled in)."""
    unknown = sorted(set(given) - set(KVM_KEYS))
    if unknown:
        raise InvalidArgument(f"{where}: unknown kvm setting {unknown[0]!r} (known: "
                              f"{', '.join(KVM_KEYS)})", field=f"{where}.kvm.{unknown[0]}")
    networks = [_network(where, k, n) for k, n in enumerate(given.get("networks") or ())]
    kernel = _file(where, "kernel", given.get("kernel"))
    initrd = _file(where, "initrd", given.get("initrd"))
    append = str(given.get("append", "") or "").strip()
    for key, value in (("initrd", initrd), ("append", append)):
        if value and not kernel:
            raise InvalidArgument(f"{where}: kvm.{key} is for direct kernel boot: set "
                                  f"kvm.kernel too", field=f"{where}.kvm.{key}")
    accel = str(given.get("accel", "") or "").strip() or ACCELS[0]
    if accel not in ACCELS:
        raise InvalidArgument(f"{where}: kvm.accel is {' or '.join(ACCELS)}, got {accel!r}",
                              field=f"{where}.kvm.accel")
    wait_for = str(given.get("wait_for", "") or "").strip() or WAIT_FOR[0]
    if wait_for not in WAIT_FOR:
        raise InvalidArgument(f"{where}: kvm.wait_for is {' or '.join(WAIT_FOR)}, got "
                              f"{wait_for!r}", field=f"{where}.kvm.wait_for")
    if wait_for == "http" and not _first_port(networks):
        raise InvalidArgument(f"{where}: kvm.wait_for \"http\" waits for the first "
                              f"forwarded TCP port, and no network forwards one",
                              field=f"{where}.kvm.wait_for")
    return {"cpus": whole_number(where, "kvm.cpus", given.get("cpus"), 1, 1, MAX_CPUS),
            "memory_mib": whole_number(where, "kvm.memory_mib", given.get("memory_mib"),
                                       DEFAULT_MEMORY_MIB, 16, MAX_MEMORY_MIB),
            "networks": networks, "kernel": kernel, "initrd": initrd, "append": append,
            "accel": accel, "wait_for": wait_for}


def _host_ports(networks: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    """(proto, host address, host port) of every forward."""
    out = []
    for n in networks:
        for f in n["forwards"]:
            m = FORWARD.match(f)
            out.append((m[1], m[2], int(m[3])))
    return out


def _first_port(networks: list[dict[str, Any]]) -> tuple[str, int] | None:
    """The host address and port of the first forwarded TCP port."""
    for proto, addr, port in _host_ports(networks):
        if proto == "tcp":
            return addr or "127.0.0.1", port
    return None


# --- names and places -----------------------------------------------------------------------

def _digest(execution: str) -> str:
    return hashlib.sha256(execution.encode()).hexdigest()[:12]


def execution_dir(site_path: str, execution: str) -> Path:
    """The directory of everything an execution made at the site."""
    return Path(site_path) / f"hybrid-dr-{_digest(execution)}"


def _workload_id(workload: str) -> str:
    # No dots: an id of ".." must not name the execution's parent directory.
    return re.sub(r"[^A-Za-z0-9_-]", "_", names.parse_workload(workload)[1])


def workload_dir(site_path: str, execution: str, workload: str) -> Path:
    return execution_dir(site_path, execution) / _workload_id(workload)


def vm_name(execution: str, workload: str) -> str:
    """The VM's name (QEMU's -name, the recovered instance's id)."""
    return f"hybrid-dr-{_digest(execution)}-{_workload_id(workload)}"


def disk_path(site_path: str, execution: str, workload: str, index: int) -> Path:
    return workload_dir(site_path, execution, workload) / f"disk-{index}.qcow2"


class _Files:
    """The state files of one VM, in its directory."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.pidfile = directory / "qemu.pid"
        self.qmp = directory / "qmp.sock"
        self.serial = directory / "serial.log"
        self.record = directory / "execution"
        self.stderr = directory / "qemu.stderr"

    def serial_tail(self) -> str:
        try:
            data = self.serial.read_bytes()[-SERIAL_TAIL:]
        except OSError:
            return "(no serial log)"
        return data.decode(errors="replace").strip() or "(serial log empty)"

    def pid(self) -> int:
        """The pid of this VM's QEMU if it runs, else 0. The pidfile alone is not
        trusted: a stale one may name a pid reused by anything, so /proc/PID/cmdline must
        be a QEMU given this very pidfile."""
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (OSError, ValueError):
            return 0
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            return 0  # exited, not yet reaped
        ours = os.path.basename(cmdline[0]).startswith(b"qemu-system") and \
            str(self.pidfile).encode() in cmdline
        return pid if ours else 0


def _nic_args(networks: list[dict[str, Any]], test_mode: bool) -> list[str]:
    args = []
    for i, n in enumerate(networks):
        netdev = f"net{i}"
        if n["network"] == USER_NETWORK or test_mode:
            forwards = n["forwards"] if n["network"] == USER_NETWORK else []
            opts = [f"user,id={netdev}", *(f"hostfwd={f}" for f in forwards)]
            if test_mode:
                opts.append("restrict=on")
            args += ["-netdev", ",".join(opts)]
        else:
            args += ["-netdev", f"bridge,id={netdev},br={n['network']}"]
        args += ["-device", f"virtio-net-pci,netdev={netdev}"]
    return args


def qemu_command(site_path: str, execution: str, spec: WorkloadSpec,
                 test_mode: bool) -> list[str]:
    """The QEMU command line of a workload's VM."""
    k = spec.settings["kvm"]
    files = _Files(workload_dir(site_path, execution, spec.workload))
    cmd = [QEMU, "-name", vm_name(execution, spec.workload), "-machine",
           f"pc,accel={k['accel']}", "-smp", str(k["cpus"]), "-m", str(k["memory_mib"]),
           "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
           "-serial", f"file:{files.serial}",
           "-qmp", f"unix:{files.qmp},server=on,wait=off",
           "-daemonize", "-pidfile", str(files.pidfile)]
    for i in range(len(spec.disks)):
        # Root disk first: it is vda, the one firmware and a kernel's root= look at.
        # Named block nodes (disk0, ...) on devices vd0, ...: what the kvm source reads
        # a running VM through (dr_common/sources/kvm_live.py), e.g. to fail it back.
        disk = disk_path(site_path, execution, spec.workload, i)
        cmd += ["-blockdev", f"driver=file,filename={disk},node-name=file{i}",
                "-blockdev", f"driver=qcow2,file=file{i},node-name=disk{i}",
                "-device", f"virtio-blk-pci,drive=disk{i},id=vd{i}"
                + (",bootindex=1" if i == 0 else "")]
    if k["kernel"]:
        cmd += ["-kernel", k["kernel"]]
        if k["initrd"]:
            cmd += ["-initrd", k["initrd"]]
        if k["append"]:
            cmd += ["-append", k["append"]]
    return cmd + _nic_args(k["networks"], test_mode)


async def _http_answers(host: str, port: int) -> bool:
    """Whether a guest answers HTTP on a forwarded port (any status will do). Connecting
    alone proves nothing: QEMU's user networking accepts on the host at once and holds
    the connection, silent, until the guest takes it; and a server sent a malformed
    request may close without a word."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
    except (TimeoutError, OSError):
        return False
    try:
        writer.write(b"HEAD / HTTP/1.0\r\n\r\n")
        await writer.drain()
        return (await asyncio.wait_for(reader.read(5), PORT_PROBE_SECONDS)) == b"HTTP/"
    except (TimeoutError, OSError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()


# --- the provider ---------------------------------------------------------------------------

class KvmProvider(RecoveryProvider):
    """Recovery to a kvm site as the registry's `kvm` provider."""

    kind = PROVIDER
    point_kinds = REPOSITORY_KINDS
    summary = "KVM recovery writes the disks of repository points as qcow2 images"

    def __init__(self, settings: dict[str, Any], limiter: asyncio.Semaphore) -> None:
        """`settings`: {"path": the site's directory}."""
        self.path = str(settings.get("path") or "")
        self.limiter = limiter

    @classmethod
    def new_limiter(cls, limits: RecoveryLimits = RecoveryLimits()) -> asyncio.Semaphore:
        return asyncio.Semaphore(limits.launches_in_flight or STARTS_IN_FLIGHT)

    @classmethod
    def check_workload(cls, where: str, settings: dict[str, Any]) -> dict[str, Any]:
        refuse_foreign(where, settings, ("kvm",), PROVIDER)
        return {"kvm": check_settings(where, dict(settings.get("kvm") or {}))}

    @classmethod
    def check_plan_settings(cls, workloads: Sequence[tuple[str, dict[str, Any]]]) -> None:
        seen: dict[tuple[str, str, int], str] = {}
        for where, settings in workloads:
            for proto, addr, port in _host_ports(settings["kvm"]["networks"]):
                key = (proto, addr or "0.0.0.0", port)
                if key in seen:
                    raise InvalidArgument(
                        f"{where}: host port {proto} {port} is forwarded twice (also by "
                        f"{seen[key]}): one VM only can have it",
                        field=f"{where}.kvm.networks")
                seen[key] = where

    # -- check

    def _check_plan(self, execution: str, groups: Sequence[BootGroup]) -> list[WorkloadSpec]:
        if not execution:
            raise InvalidArgument("an execution id is needed (it names what recovery makes)",
                                  field="execution")
        if not self.path or not os.path.isdir(self.path):
            raise FailedPrecondition(f"the kvm site's directory {self.path or '(none)'} does "
                                     f"not exist on the control plane's host")
        if "," in self.path:
            # QEMU's option syntax separates with commas (file=...,format=...).
            raise FailedPrecondition(f"the kvm site's directory {self.path} has a comma, "
                                     f"which QEMU's options cannot hold: use another path")
        specs = repository_workloads(groups, "KVM")
        return specs

    async def check(self, execution: str, groups: Sequence[BootGroup], *,
                    test_mode: bool = False) -> None:
        specs = self._check_plan(execution, groups)
        if shutil.which(QEMU) is None:
            raise FailedPrecondition(f"{QEMU} is not installed on the control plane's host "
                                     f"(Debian: apt-get install qemu-system-x86)")
        need = 0
        for spec in specs:
            k = spec.settings["kvm"]
            for key in ("kernel", "initrd"):
                if k[key] and not os.path.isfile(k[key]):
                    raise InvalidArgument(f"workload {spec.workload}: kvm.{key} {k[key]} is "
                                          f"not a file", field=f"kvm.{key}")
            if k["accel"] == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):
                raise InvalidArgument(f"workload {spec.workload}: kvm.accel kvm needs "
                                      f"/dev/kvm, which this host lacks: use tcg",
                                      field="kvm.accel")
            qmp = _Files(workload_dir(self.path, execution, spec.workload)).qmp
            if len(str(qmp).encode()) > SOCKET_PATH_MAX:
                raise FailedPrecondition(
                    f"the kvm site's directory {self.path} is too deep: the QMP socket "
                    f"{qmp} would be longer than a unix socket's {SOCKET_PATH_MAX} bytes; "
                    f"use a shorter site path")
            for i, n in enumerate(k["networks"]):
                if n["network"] != USER_NETWORK and not test_mode and \
                        not os.path.isdir(f"/sys/class/net/{n['network']}/bridge"):
                    raise InvalidArgument(f"workload {spec.workload}: {n['network']} is not "
                                          f"a bridge of this host",
                                          field=f"kvm.networks[{i}].network")
            for proto, addr, port in _host_ports(k["networks"]):
                if not _port_free(proto, addr, port):
                    raise InvalidArgument(
                        f"workload {spec.workload}: host port {proto} {addr or '*'}:{port} "
                        f"is in use: forward another one", field="kvm.networks")
            # The qcow2, and the raw file the node writes before converting it.
            need += 2 * sum(d.size_bytes for d in spec.disks)
        st = os.statvfs(self.path)
        free = st.f_bavail * st.f_frsize
        if free < need:
            raise InvalidArgument(
                f"the kvm site's directory {self.path} has {free / MiB:.0f} MiB free; the "
                f"disks need up to {need / MiB:.0f} MiB while they are written: free space "
                f"or use another site", field="recovery_plan.recovery_site",
                reason="kvm-insufficient-disk")

    # -- prepare: the qcow2 images, by nodes

    async def prepare(self, execution: str, groups: Sequence[BootGroup], *,
                      mover: DiskMover, on_event: EventSink) -> None:
        self._check_plan(execution, groups)

        async def write(spec: WorkloadSpec, index: int) -> tuple[str, str]:
            dest = nodes_pb2.RestoreDestination(kvm=nodes_pb2.KvmImage(
                path=str(disk_path(self.path, execution, spec.workload, index)),
                overwrite=True))
            result = await mover.restore(spec.disks[index], dest)
            return result.datastore_path, f"written by a node, verified {result.verified}"

        await prepare_disks(groups, write, on_event, in_flight=self.restores_in_flight(RESTORES_IN_FLIGHT))

    # -- recover: the VMs, group by group

    async def recover(self, execution: str, groups: Sequence[BootGroup], *, test_mode: bool,
                      on_event: EventSink, running_timeout: float) -> list[RecoveredInstance]:
        self._check_plan(execution, groups)
        recovered: list[RecoveredInstance] = []
        for group in groups:
            results = await asyncio.gather(
                *(self._start(execution, group.name, spec, test_mode, on_event)
                  for spec in group.instances), return_exceptions=True)
            raise_group_failures(group, results, "VM(s)", execution, marked="named after")
            up = await asyncio.gather(
                *(self._wait_up(execution, group.name, spec, running_timeout, on_event)
                  for spec in group.instances), return_exceptions=True)
            raise_group_failures(group, up, "VM(s)", execution, marked="named after")
            recovered += up
            on_event(RecoveryEvent(time.monotonic(), group.name, "", "group-running",
                                   f"{len(group.instances)} VM(s) up"))
        return recovered

    async def _start(self, execution: str, group: str, spec: WorkloadSpec, test_mode: bool,
                     on_event: EventSink) -> None:
        """Starts the workload's QEMU, or finds it running (a retried execution)."""
        files = _Files(workload_dir(self.path, execution, spec.workload))
        name = vm_name(execution, spec.workload)
        for i in range(len(spec.disks)):
            if not disk_path(self.path, execution, spec.workload, i).is_file():
                raise RecoveryFailed(f"disk {i} of workload {spec.workload} is not at the "
                                     f"site (prepare did not write it): retry the execution")
        if pid := files.pid():
            on_event(RecoveryEvent(time.monotonic(), group, spec.workload,
                                   "instance-launched", f"{name} (pid {pid}, already running)"))
            return
        files.record.write_text(f"{TAG_EXECUTION}={execution}\n{TAG_WORKLOAD}={spec.workload}\n"
                                f"{TAG_TEST}={'true' if test_mode else 'false'}\n")
        for stale in (files.pidfile, files.qmp):
            stale.unlink(missing_ok=True)
        cmd = qemu_command(self.path, execution, spec, test_mode)
        async with self.limiter:
            # A blocking run in a worker thread, its output to a file: with -daemonize
            # the VM outlives the process waited for, and neither pipes (held until the
            # daemon lets go of them) nor the event loop's child watcher are to be
            # trusted with that in every host process.
            code = await asyncio.to_thread(_launch, cmd, files.stderr)
        # -daemonize: QEMU's first process exits once the VM is set up, 0 if it started.
        if code != 0:
            said = files.stderr.read_text(errors="replace").strip()[-SERIAL_TAIL:]
            raise RecoveryFailed(f"QEMU did not start VM {name} (exit {code}): {said}")
        log.info("VM started", vm=name, workload=spec.workload, pid=files.pid())
        on_event(RecoveryEvent(time.monotonic(), group, spec.workload, "instance-launched",
                               f"{name} (pid {files.pid()})"))

    async def _wait_up(self, execution: str, group: str, spec: WorkloadSpec, timeout: float,
                       on_event: EventSink) -> RecoveredInstance:
        k = spec.settings["kvm"]
        files = _Files(workload_dir(self.path, execution, spec.workload))
        name = vm_name(execution, spec.workload)
        port = _first_port(k["networks"]) if k["wait_for"] == "http" else None
        deadline = time.monotonic() + timeout
        delay = POLL_FIRST
        status = "not asked"
        while True:
            if not files.pid():
                raise RecoveryFailed(f"QEMU of VM {name} exited; its serial log ends: "
                                     f"{files.serial_tail()}")
            try:
                status = (await _qmp(files, "query-status")).get("status", "")
            except (DRError, OSError) as exc:
                status = f"QMP: {getattr(exc, 'message', exc)}"
            if status == "running" and (port is None or await _http_answers(*port)):
                break
            if time.monotonic() + delay > deadline:
                said = status if port is None or status != "running" else \
                    f"running, no HTTP answer on {port[0]}:{port[1]}"
                raise RecoveryFailed(
                    f"VM {name} is not up after {timeout:g} s ({said}); its serial log "
                    f"ends: {files.serial_tail()}")
            await asyncio.sleep(delay)
            delay = min(POLL_CAP, delay * 2)
        on_event(RecoveryEvent(time.monotonic(), group, spec.workload, "instance-running",
                               f"{name} ({'HTTP on port ' + str(port[1]) if port else 'running'})"))
        forwarded = _first_port(k["networks"])
        return RecoveredInstance(
            workload=spec.workload, instance_id=name, private_ip="", state="running",
            address=forwarded[0] if forwarded else "",
            volume_ids=tuple(str(disk_path(self.path, execution, spec.workload, i))
                             for i in range(len(spec.disks))),
            network_interface_ids=tuple(f"net{i}" for i in range(len(k["networks"]))),
            image_id="")

    # -- cleanup

    async def cleanup(self, execution: str, *, on_event: EventSink) -> dict[str, list[str]]:
        if not execution:
            raise InvalidArgument("which execution to clean up?", field="execution")
        root = execution_dir(self.path, execution)
        dirs = sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
        stopped = [name for name in await asyncio.gather(*(_stop(_Files(d)) for d in dirs))
                   if name]
        on_event(RecoveryEvent(time.monotonic(), "", "", "cleanup-instances",
                               ", ".join(stopped)))
        disks = sorted(str(p) for d in dirs for p in d.glob("*.qcow2"))
        for p in disks:
            Path(p).unlink(missing_ok=True)
        on_event(RecoveryEvent(time.monotonic(), "", "", "cleanup-disks", ", ".join(disks)))
        removed = []
        if root.exists():
            await asyncio.to_thread(shutil.rmtree, root)
            removed.append(str(root))
        on_event(RecoveryEvent(time.monotonic(), "", "", "cleanup-directories",
                               ", ".join(removed)))
        deleted = {"vms": stopped, "disks": disks, "directories": removed}
        log.info("recovery cleaned up", execution=execution,
                 **{k: len(v) for k, v in deleted.items()})
        return deleted


def _launch(cmd: list[str], stderr: Path) -> int:
    with open(stderr, "wb") as err:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                              start_new_session=True, timeout=LAUNCH_TIMEOUT,
                              check=False).returncode


def _port_free(proto: str, addr: str, port: int) -> bool:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((addr or "0.0.0.0", port))
        except OSError:
            return False
    return True


async def _qmp(files: "_Files", command: str):
    """One QMP command to a recovered VM (a short session, in a worker thread: QMP
    serves one client at a time)."""
    def run():
        with Qmp(str(files.qmp), timeout=5) as q:
            return q.execute(command)
    return await asyncio.to_thread(run)


async def _stop(files: _Files) -> str:
    """Stops the VM of a workload directory if it runs; returns its pid's VM name, or ""
    when nothing ran. QMP quit first (QEMU flushes its disks and exits), signals if QMP
    does not answer or QEMU does not go."""
    pid = files.pid()
    if not pid:
        return ""
    name = f"{files.dir.parent.name}-{files.dir.name}"
    with contextlib.suppress(DRError, OSError):
        await _qmp(files, "quit")
    for sig, wait in ((None, QUIT_WAIT), (signal.SIGTERM, TERM_WAIT), (signal.SIGKILL, TERM_WAIT)):
        if sig is not None and files.pid() == pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while files.pid() == pid and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if files.pid() != pid:
            log.info("VM stopped", vm=name, pid=pid, by=sig.name if sig else "QMP quit")
            return name
    raise RecoveryFailed(f"VM {name} (pid {pid}) did not exit after SIGKILL; stop it and "
                         f"run cleanup again")
