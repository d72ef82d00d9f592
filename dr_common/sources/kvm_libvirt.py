"""Running KVM VMs managed by libvirt: one crash-consistent point per VM per cycle,
through libvirt's backup API (virDomainBackupBegin, pull mode, with checkpoints), read
over the NBD server libvirt has QEMU start while the guest keeps running.

This is kvm_live's sibling for hosts where libvirt owns QEMU's monitor (a QMP socket of
our own is not to be had there). A disk's locator is `libvirt:URI#DOMAIN-UUID#TARGET`
(e.g. `libvirt:qemu:///system#6f1c...#vda`); kvm.py sends locators of that prefix here,
as it sends `qmp:` ones to kvm_live. The point is read exactly as kvm_live's is: a
kvm_live.LiveRef per disk (NBD socket, export, the frozen bitmap libvirt exports as
`qemu:dirty-bitmap:backup-<target>`) and kvm_live.LiveDisk.

A cycle's snapshot task (`take`) starts one pull-mode backup job of the VM's disks
together with a new checkpoint named after the cycle (libvirt makes both in one QEMU
transaction: the same instant for every disk). The checkpoint is the next cycle's base:
a disk whose previous point's checkpoint is present is backed up `incremental` from it,
and libvirt exports the changes since then as the frozen bitmap; QEMU's fleecing writes
old contents into a scratch qcow2 in `.<domain>.hdr/` beside the VM's first disk image.

Tracking that cannot be trusted is not used (qemu.untrusted_reason, as for images at
rest and kvm_live): no previous point, its checkpoint gone (deleted, the VM redefined)
or refused by libvirt as inconsistent (QEMU died with the bitmap in use), or the disk's
size changed since: the disk is read in full and the reason recorded. (A shrink and grow
back between two cycles is not seen, as for kvm_live: docs/KVM.md.)

`drop` ends the cycle's backup job (libvirt then removes the export and the scratch
files, and stops the NBD server) and removes what is left in the state directory; the
next cycle's `take` does the same first, for a node that died holding a job, and
deletes this plan's checkpoints other than the previous point's.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

import structlog

from dr_common.errors import InvalidArgument, SourceError
from dr_common.names import resource_id
from dr_common.sources import qemu
from dr_common.sources.base import DiskInfo, WorkloadInfo
from dr_common.sources.kvm_live import LiveRef

log = structlog.get_logger()

LOCATOR_PREFIX = "libvirt:"
# A kvm site whose directory holds this file (one line: a libvirt URI) lists the
# domains of that libvirt as running VMs.
URI_FILE = "libvirt.uri"
_STATE_DIR = ".{vm}.hdr"
_NBD_SOCKET = "nbd.sock"
# Ending a job takes a moment; a stuck one must not hold a node forever.
_JOB_END_SECONDS = 30.0


def _libvirt():
    # python3-libvirt comes from Debian (tools/install-system-deps.sh); only nodes that
    # talk to libvirt need it.
    try:
        import libvirt
    except ImportError:
        raise SourceError("python3-libvirt is not importable: run "
                          "tools/install-system-deps.sh", retryable=False) from None
    # Errors are raised as libvirtError and reported by us; libvirt's default handler
    # would also print each one (including those we expect, e.g. "no backup job").
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt


# --- where things are -------------------------------------------------------------------

def locator(uri: str, domain_uuid: str, target: str) -> str:
    return f"{LOCATOR_PREFIX}{uri}#{domain_uuid}#{target}"


def is_libvirt(text: str) -> bool:
    return text.startswith(LOCATOR_PREFIX)


def parse_locator(text: str) -> tuple[str, str, str]:
    """(URI, domain UUID, target device) of a locator."""
    parts = text[len(LOCATOR_PREFIX):].rsplit("#", 2)
    if not is_libvirt(text) or len(parts) != 3 or not all(parts):
        raise InvalidArgument(f"{text!r} is not a libvirt domain's disk "
                              f"(libvirt:URI#DOMAIN-UUID#TARGET)", field="disk.locator")
    return parts[0], parts[1], parts[2]


def vm_key(uri: str, domain_uuid: str) -> str:
    """What a LiveRef's `socket` holds for a libvirt VM: where it is."""
    return f"{uri}#{domain_uuid}"


def _connect(uri: str):
    libvirt = _libvirt()
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as e:
        raise SourceError(f"cannot connect to libvirt at {uri}: {e.get_error_message()}; "
                          f"is libvirtd running?") from None


def _domain(conn, uri: str, domain_uuid: str):
    libvirt = _libvirt()
    try:
        return conn.lookupByUUIDString(domain_uuid)
    except libvirt.libvirtError:
        raise SourceError(f"{uri} has no domain {domain_uuid} any more: refresh the "
                          f"site's inventory", retryable=False) from None


def _disks(dom) -> dict[str, str]:
    """The domain's file-backed disks: target device -> source file."""
    root = ET.fromstring(dom.XMLDesc(0))
    out = {}
    for d in root.findall("./devices/disk"):
        target, source = d.find("target"), d.find("source")
        if d.get("device", "disk") != "disk" or target is None or source is None:
            continue
        path = source.get("file") or source.get("dev")
        if path:
            out[target.get("dev")] = path
    return out


def state_dir(dom) -> Path:
    """Scratch files and the NBD socket: beside the VM's first disk, where QEMU (libvirt's
    qemu user) may write."""
    disks = _disks(dom)
    if not disks:
        raise SourceError(f"domain {dom.name()} has no file-backed disk", retryable=False)
    first = Path(next(iter(disks.values())))
    return first.parent / _STATE_DIR.format(vm=dom.name())


# --- inventory ---------------------------------------------------------------------------

def site_uri(root: str | os.PathLike) -> str:
    p = Path(root) / URI_FILE
    return p.read_text().strip() if p.is_file() else ""


def discover(root: str | os.PathLike) -> tuple[list[WorkloadInfo], set[str]]:
    """The running domains of the libvirt the site names (URI_FILE), and the image files
    they hold (not listed again as images at rest)."""
    uri = site_uri(root)
    if not uri:
        return [], set()
    libvirt = _libvirt()
    conn = _connect(uri)
    vms, in_use = [], set()
    try:
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            disks = []
            for target, path in _disks(dom).items():
                in_use.add(str(Path(path).resolve()))
                capacity = dom.blockInfo(target)[0]
                disks.append(DiskInfo(id=resource_id(target), display_name=target,
                                      locator=locator(uri, dom.UUIDString(), target),
                                      size=int(capacity), cbt="dirty-bitmap"))
            if disks:
                vms.append(WorkloadInfo(resource_id(dom.name()), f"{dom.name()} (libvirt)",
                                        tuple(disks)))
    finally:
        conn.close()
    return vms, in_use


# --- a point of a VM -----------------------------------------------------------------------

def _plan_pattern(plan_prefix: str) -> re.Pattern:
    return re.compile(rf"^{re.escape(plan_prefix)}\d+$")


def _our_job(dom, sdir: Path) -> bool | None:
    """True if the domain's backup job is ours (its NBD socket is in our state dir),
    False if someone else's, None if there is none."""
    libvirt = _libvirt()
    try:
        xml = dom.backupGetXMLDesc(0)
    except libvirt.libvirtError:
        return None
    server = ET.fromstring(xml).find("server")
    return server is not None and server.get("socket") == str(sdir / _NBD_SOCKET)


def _end_job(dom, sdir: Path) -> list[str]:
    removed = []
    ours = _our_job(dom, sdir)
    if ours:
        dom.abortJob()
        deadline = time.monotonic() + _JOB_END_SECONDS
        while _our_job(dom, sdir) is not None:  # libvirt ends the job asynchronously
            if time.monotonic() > deadline:
                raise SourceError(f"libvirt did not end the backup job of {dom.name()} "
                                  f"within {_JOB_END_SECONDS:.0f}s")
            time.sleep(0.05)
        removed.append("backup job")
    elif ours is False:
        raise SourceError(f"domain {dom.name()} is being backed up by another tool (a "
                          f"backup job holds it); wait for it to end")
    if sdir.is_dir():
        for f in sdir.iterdir():
            f.unlink(missing_ok=True)
            removed.append(f"file {f.name}")
    return removed


def _checkpoints(dom) -> dict[str, object]:
    return {c.getName(): c for c in dom.listAllCheckpoints(0)}


@dataclass
class _Disk:
    disk: str
    target: str
    size: int
    previous: LiveRef | None
    reason: str = ""


def take(uri: str, domain_uuid: str, disks: list[tuple[str, str]], *, plan_prefix: str,
         checkpoint: str, previous: dict[str, LiveRef]) -> dict[str, LiveRef]:
    """The point of one domain: `disks` are (disk name, target) pairs, `previous` the
    previous point's refs by disk name. Returns this point's ref per disk name."""
    libvirt = _libvirt()
    conn = _connect(uri)
    try:
        dom = _domain(conn, uri, domain_uuid)
        sdir = state_dir(dom)
        _end_job(dom, sdir)
        keep = {p.bitmap for p in previous.values()}
        ours = _plan_pattern(plan_prefix)
        present = _checkpoints(dom)
        for name, cp in present.items():
            if ours.match(name) and name not in keep:
                cp.delete(0)
        present = _checkpoints(dom)
        attached = _disks(dom)
        todo = []
        for name, target in disks:
            if target not in attached:
                raise SourceError(f"domain {dom.name()} has no disk {target} any more "
                                  f"(detached?): refresh the site's inventory",
                                  retryable=False)
            size = int(dom.blockInfo(target)[0])
            prev = previous.get(name)
            d = _Disk(name, target, size, prev)
            # A checkpoint libvirt lists records from its creation on (it has no
            # disabled state); whether QEMU's bitmap is intact libvirt says at begin.
            info = {"flags": ["auto"]} if prev and prev.bitmap in present else None
            d.reason = "first-cycle" if prev is None else qemu.untrusted_reason(
                info, previous_size=prev.size, size=size)
            todo.append(d)
        sdir.mkdir(mode=0o770, exist_ok=True)
        owner = Path(attached[disks[0][1]]).stat()
        os.chown(sdir, owner.st_uid, owner.st_gid)  # QEMU makes the NBD socket here
        try:
            _begin(dom, sdir, checkpoint, todo, attached)
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_CHECKPOINT_INCONSISTENT:
                raise SourceError(f"libvirt could not begin the backup of {dom.name()}: "
                                  f"{e.get_error_message()}") from None
            for d in todo:  # QEMU died with a bitmap in use: no incremental is safe
                d.reason = d.reason or "bitmap-inconsistent"
            for name, cp in _checkpoints(dom).items():
                if ours.match(name):
                    cp.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
            _begin(dom, sdir, checkpoint, todo, attached)
        nbd = str(sdir / _NBD_SOCKET)
        out = {}
        for d in todo:
            if d.reason:
                log.warning("full sync", vm=dom.name(), target=d.target, reason=d.reason)
            out[d.disk] = LiveRef(socket=vm_key(uri, domain_uuid), device=d.target,
                                  bitmap=checkpoint, size=d.size, nbd=nbd,
                                  export=f"{checkpoint}-{d.target}",
                                  view="" if d.reason else f"backup-{d.target}",
                                  full_sync_reason=d.reason)
        return out
    finally:
        conn.close()


def _begin(dom, sdir: Path, checkpoint: str, todo: list[_Disk], attached: dict[str, str]
           ) -> None:
    ours = {d.target: d for d in todo}
    backup = ET.Element("domainbackup", mode="pull")
    ET.SubElement(backup, "server", transport="unix", socket=str(sdir / _NBD_SOCKET))
    bdisks = ET.SubElement(backup, "disks")
    cp = ET.Element("domaincheckpoint")
    ET.SubElement(cp, "name").text = checkpoint
    cdisks = ET.SubElement(cp, "disks")
    for target in attached:
        d = ours.get(target)
        ET.SubElement(cdisks, "disk", name=target, checkpoint="bitmap" if d else "no")
        if d is None:
            ET.SubElement(bdisks, "disk", name=target, backup="no")
            continue
        attrs = {"name": target, "backup": "yes", "type": "file",
                 "exportname": f"{checkpoint}-{target}"}
        if d.reason:
            attrs["backupmode"] = "full"
        else:
            attrs |= {"backupmode": "incremental", "incremental": d.previous.bitmap,
                      "exportbitmap": f"backup-{target}"}
        e = ET.SubElement(bdisks, "disk", **attrs)
        ET.SubElement(e, "driver", type="qcow2")
        ET.SubElement(e, "scratch", file=str(sdir / f"{checkpoint}-{target}.scratch"))
    dom.backupBegin(ET.tostring(backup, encoding="unicode"),
                    ET.tostring(cp, encoding="unicode"), 0)


def drop(uri: str, domain_uuid: str) -> list[str]:
    """Ends the cycle's backup job of the domain and removes its scratch files (its
    checkpoints stay: the newest is the next cycle's base)."""
    conn = _connect(uri)
    try:
        dom = _domain(conn, uri, domain_uuid)
        return _end_job(dom, state_dir(dom))
    finally:
        conn.close()


# --- stopping a VM (the final cycle of a migration) ----------------------------------------

def suspend(uri: str, domain_uuid: str) -> str:
    """Pauses the domain (virDomainSuspend: its vCPUs stop; QEMU and its disks stay, so
    the cycle's backup job is begun as usual) and leaves it paused. A domain already
    paused is fine. Returns what was done, for the task's log."""
    libvirt = _libvirt()
    conn = _connect(uri)
    try:
        dom = _domain(conn, uri, domain_uuid)
        before = dom.state()[0]
        if before != libvirt.VIR_DOMAIN_PAUSED:
            try:
                dom.suspend()
            except libvirt.libvirtError as e:
                raise SourceError(f"libvirt could not suspend {dom.name()}: "
                                  f"{e.get_error_message()}; stop it yourself and use "
                                  f"failover from a point taken after",
                                  retryable=False) from None
        if dom.state()[0] != libvirt.VIR_DOMAIN_PAUSED:
            raise SourceError(f"{dom.name()} is not paused after virDomainSuspend; stop "
                              f"it yourself and use failover from a point taken after",
                              retryable=False)
        was = "paused" if before == libvirt.VIR_DOMAIN_PAUSED else (
            "running" if before == libvirt.VIR_DOMAIN_RUNNING else f"state {before}")
        log.info("domain suspended", vm=dom.name(), uri=uri, was=was)
        return f"{uri} {dom.name()}: paused (was {was})"
    finally:
        conn.close()


def remove_state_dir(dom) -> None:
    shutil.rmtree(state_dir(dom), ignore_errors=True)
