"""Source adapters: where protected disks are read from. One module per site kind, one
registry line each; `open_source(locator)` is the only way in.

A source module offers:
- `open_source(locator, site, env) -> SourceDisk` (nodes): `locator` is the kind's own
  message of `SourceLocator` (proto/dr/v1/nodes.proto), `site` the site's settings;
- `locate(disk) -> message` (control plane): the kind's locator for one disk of a cycle;
- if the kind `snapshots`: `take_snapshots(spec, env) -> [SourceSnapshot]` (the disk,
  its snapshot id and the consistency it got), the
  cycle's consistency group, taken by a snapshot task before the disks are read;
- if the kind `drops_snapshots`: `drop_snapshots(spec, env)`, run by a drop_snapshots
  task when the cycle ends, completed or failed, to remove what the snapshot task took;
- if the kind `stops_workloads`: `stop_workloads(spec, env) -> [str]` (what it stopped),
  run by the snapshot task before `take_snapshots` when the spec asks (the final cycle
  of a migration);
- if the kind `writes_back`: `home_image(locator) -> (path, format) | None` (control
  plane): the image file a failback writes a disk's data back into (a node restore
  task), None for a disk that is not one (a running VM's).
The facts the control plane needs without opening anything are in `KINDS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from dr_common.errors import FailedPrecondition, InvalidArgument
from dr_common.registry import Registry
from dr_common.proto.dr.v1 import nodes_pb2
from dr_common.sources.base import DiskToRead, SourceDisk, SourceEnv


@dataclass(frozen=True)
class SourceKind:
    """What the control plane knows of a source kind without opening one."""

    name: str
    module: str
    # A cycle starts with a snapshot task taking the plan's consistency group; each disk
    # is then read from its snapshot.
    snapshots: bool = False
    # The cycle's snapshots are let go when it ends (vsphere: VM snapshots slow the VM
    # down and must not pile up); otherwise they are kept as the next cycle's base (aws).
    drops_snapshots: bool = False
    # The kind can stop the plan's workloads before a cycle's snapshot and leave them
    # stopped, so the point holds every write they made: the final cycle of a migration.
    # file: images at rest, nothing runs, nothing to stop; kvm: running VMs are paused
    # (QMP stop, libvirt suspend). aws, azure and vsphere could stop their instances and
    # VMs through their APIs; not done yet (check_stops_workloads says so).
    stops_workloads: bool = False
    # Failback can write recovered data back over the site's disks: file and kvm images
    # at rest (each an image file a node restore replaces). aws, azure and vsphere would
    # need a volume, a managed disk or a VMDK written back through their APIs: not done.
    writes_back: bool = False


# The registry. The kind is the name of its field in SourceLocator's `kind` oneof.
KINDS: dict[str, SourceKind] = {k.name: k for k in (
    SourceKind("file", "dr_common.sources.file", stops_workloads=True, writes_back=True),
    # kvm: running VMs get a point per cycle (QMP), dropped when it ends; images at rest
    # need neither (their snapshot is "", their drop a no-op).
    SourceKind("kvm", "dr_common.sources.kvm", snapshots=True, drops_snapshots=True,
               stops_workloads=True, writes_back=True),
    SourceKind("aws", "dr_common.sources.aws", snapshots=True),
    SourceKind("vsphere", "dr_common.sources.vsphere", snapshots=True, drops_snapshots=True),
    SourceKind("azure", "dr_common.sources.azure", snapshots=True),
)}


REGISTRY = Registry("source", KINDS.values())


def kind(name: str, *, field: str = "source.kind"):
    return REGISTRY.get(name, field=field)


def _module(name: str, field: str) -> ModuleType:
    return REGISTRY.module(name, field=field)


def kind_of(loc: nodes_pb2.SourceLocator) -> str:
    return loc.WhichOneof("kind") or ""


def locator(kind_name: str, disk: DiskToRead) -> nodes_pb2.SourceLocator:
    """Where a cycle reads `disk` from a site of `kind_name` (control plane). The site's
    settings are added when the task is leased, never stored."""
    module = _module(kind_name, "source.kind")
    loc = nodes_pb2.SourceLocator()
    getattr(loc, kind_name).CopyFrom(module.locate(disk))
    return loc


async def open_source(loc: nodes_pb2.SourceLocator, env: SourceEnv) -> SourceDisk:
    """Opens the disk `loc` names at its consistent point; the caller closes it (in a
    worker thread: closing may stop a qemu-nbd)."""
    name = kind_of(loc)
    if not name:
        raise InvalidArgument("the task names no source (SourceLocator.kind is unset)",
                              field="source")
    return await _module(name, "source").open_source(getattr(loc, name), loc.site, env)


async def take_snapshots(spec: nodes_pb2.SnapshotSpec,
                         env: SourceEnv) -> list[nodes_pb2.SourceSnapshot]:
    """Takes the cycle's consistency group at a source kind that snapshots: one
    SourceSnapshot per disk."""
    name = kind_of(spec.source)
    if not kind(name, field="source").snapshots:
        raise InvalidArgument(f"{name} sources take no snapshots: their disks are read as "
                              f"they are", field="source")
    return await _module(name, "source").take_snapshots(spec, env)


async def drop_snapshots(spec: nodes_pb2.DropSnapshotsSpec, env: SourceEnv) -> None:
    """Removes what the cycle's snapshot task took, at a kind that drops snapshots."""
    name = kind_of(spec.source)
    if not kind(name, field="source").drops_snapshots:
        raise InvalidArgument(f"{name} sources keep their snapshots: nothing to drop",
                              field="source")
    await _module(name, "source").drop_snapshots(spec, env)


def check_stops_workloads(kind_name: str) -> None:
    """Refuses (control plane, before anything is queued) a cycle that is to stop the
    workloads of a site whose kind cannot."""
    if not kind(kind_name).stops_workloads:
        raise FailedPrecondition(
            f"sites of kind {kind_name} cannot stop their workloads for a migration yet; "
            f"stop them yourself and use failover from a point taken after")


def home_image(kind_name: str, disk: str, locator: str) -> tuple[str, str]:
    """Where a failback writes `disk` (found at `locator` by inventory) back at its
    site of `kind_name`: (image path, restore format); FailedPrecondition saying why
    not otherwise."""
    writes_back = kind(kind_name).writes_back
    found = _module(kind_name, "source").home_image(locator) if writes_back else None
    if found is None:
        what = "it is a running VM's" if writes_back else f"{kind_name} sites cannot yet"
        raise FailedPrecondition(
            f"disk {disk} cannot be written back at its {kind_name} site ({what}; failback "
            f"writes image files of file and kvm sites): protect the recovered workloads "
            f"into a new plan and recover them from it instead")
    return found


async def stop_workloads(spec: nodes_pb2.SnapshotSpec, env: SourceEnv) -> list[str]:
    """Stops the workloads of the cycle's consistency group, and leaves them stopped, at a
    kind that stops workloads; returns what it stopped (for the task's log). Stopping
    what is already stopped is success: a retried snapshot task stops again."""
    name = kind_of(spec.source)
    check_stops_workloads(name)
    return await _module(name, "source").stop_workloads(spec, env)
