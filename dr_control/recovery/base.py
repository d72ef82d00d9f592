"""The interface every recovery provider offers, and the values it is given and returns.

A provider brings a recovery plan's workloads up at one kind of target site from a
recovery point (DESIGN.md 6). The recovery service (dr_control/services/recovery.py)
finds it by the site's kind in the registry (dr_control.recovery.provider_class), opens
one per call with the site's settings and the API limiter of that site, and knows
nothing else of the platform.

The steps of a recovery and where each is today:
- *check*: everything that can be checked before anything is created. A recovery
  plan's per-workload settings are each provider's own (aws: instance type, subnet,
  security groups, IP; vsphere: CPUs, memory, datastore, placement, port groups):
  `check_workload` checks and normalizes them when the plan is created, naming the
  field, and refuses settings of another provider; `check` checks them against the
  recovery site (its networks, datastores, free space, snapshots) when an execution
  starts, so a wrong plan fails StartRecovery with the field to fix and creates
  nothing.
- *prepare*: moving the point's data where the site can boot it (DESIGN.md 6: "asks
  nodes for disk reconstruction when the target needs data moved"): `prepare`, given a
  `DiskMover` through which the recovery service queues node restore tasks and waits
  for them (vsphere: each disk uploaded to a datastore; azure: a repository point's disks
  uploaded into managed disks, an azure-disk point's copied from its snapshots by Azure
  without a node; kvm: each disk written as a qcow2 in the site's directory). aws needs none: EC2 makes the volumes from the point's snapshots
  itself.
- *start workload*, *network attach*: `recover` does both for every workload of a boot
  group; the service calls it for one group at a time, in order, validating each before
  the next (aws: an image registered from the point's snapshots, an instance launched from
  it on its subnet; vsphere: a VM created on the uploaded disks with its NICs on the
  mapped port groups, powered on; azure: a NIC in the mapped subnet and a VM on the
  prepared managed disks, provisioned; kvm: a QEMU process on the qcow2 images, its
  NICs on user networking or host bridges), group after group, each starting only when every
  workload of the one before is up.
- *cleanup*: `cleanup` deletes what `prepare` and `recover` created for an execution (a
  test drill, a failed run); the recovery point itself is never touched.
What is not a provider's: *validate* (per-workload checks, a TCP port, an HTTP status, a
command, that decide `completed` against `partially-completed`) and scripts run in the
control plane against each RecoveredInstance's `address` (services/recovery_run.py); a
migration stops its source workloads through the source site, in the final cycle's
snapshot task (dr_common/sources: `stops_workloads`).

`prepare`, `recover` and `cleanup` are idempotent: everything a provider creates is
tagged with (or named after) the execution, so running them again after a failure or a
control-plane restart reuses or finds what an earlier attempt made.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from dr_common.errors import DRError, FailedPrecondition, InvalidArgument
from dr_common.proto.dr.v1 import common_pb2, nodes_pb2
from dr_common.targets import REPOSITORY_KINDS
from dr_control.config import RecoveryLimits

# What every provider tags (or annotates) what it creates with: the execution finds it
# again for a retry, a resume or cleanup; the workload says which one it is; test says
# whether it is a drill's.
TAG_EXECUTION = "hybrid-dr:execution"
TAG_WORKLOAD = "hybrid-dr:workload"
TAG_TEST = "hybrid-dr:test"

# --- values -------------------------------------------------------------------------


@dataclass(frozen=True)
class RecoveredDisk:
    """One disk of a recovery point, root disk first: the snapshot holding it (ebs
    points) or its manifest in the repository (repository points), and its size."""

    # aws: the device it gets (/dev/xvda first); "" until its provider names it.
    device_name: str
    snapshot_id: str  # native points (aws: an EBS snapshot); "" for repository points
    size_bytes: int
    disk: str = ""  # the disk's resource name, "sites/s/workloads/w/disks/d"
    root_hash: str = ""  # repository points: the disk's manifest root


@dataclass(frozen=True)
class WorkloadSpec:
    """A workload of a boot group: its disks in the point, and its target settings as
    its provider's `check_workload` normalized them (the service does not read them)."""

    workload: str
    disks: tuple[RecoveredDisk, ...]
    settings: Mapping[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BootGroup:
    """Workloads started together. The service passes WorkloadSpecs; a provider's
    module-level functions may take its own typed specs (aws: InstanceSpec)."""

    name: str
    instances: tuple[Any, ...]


@dataclass(frozen=True)
class RecoveredInstance:
    workload: str
    instance_id: str
    private_ip: str
    state: str
    volume_ids: tuple[str, ...]
    network_interface_ids: tuple[str, ...]
    image_id: str
    # Where dr-control reaches the workload (validation checks, scripts' JSON); "": its
    # private IP (kvm user networking: the host address its ports are forwarded on).
    address: str = ""


@dataclass(frozen=True)
class RecoveryEvent:
    """One step of an execution, for progress, the execution record and tests."""

    time: float  # time.monotonic()
    group: str
    workload: str  # "" for group-wide and cleanup steps
    # disk-prepared, image-registered, instance-launched, instance-running, group-running,
    # cleanup-*
    step: str
    detail: str = ""


class RecoveryFailed(DRError):
    """A disk could not be prepared, a launch failed or an instance did not come up. What was created stays
    tagged with the execution: `cleanup()` removes it, or a retry of the execution
    reuses it."""

    reason = "recovery-failed"


EventSink = Callable[[RecoveryEvent], None]


class DiskMover(Protocol):
    """How a provider's `prepare` gets a point's disk written somewhere (the recovery
    service's: a node restore task of the point's repository, bound to the nodes that
    reach it, whose destination gets the recovery site's settings when it is leased)."""

    async def restore(self, disk: RecoveredDisk, destination: nodes_pb2.RestoreDestination
                      ) -> common_pb2.RestoreResult:
        """Writes `disk` of the execution's point to `destination` (its `site` is
        filled in by the service) and returns the restore's result once it is done;
        RecoveryFailed with the task's error otherwise. Idempotent: a restore to the
        same destination already done (or running) is reused."""


# --- the interface --------------------------------------------------------------------

class RecoveryProvider(ABC):
    """Recovery at sites of one kind (`kind`, its key in the registry)."""

    kind: ClassVar[str]
    # The target kinds whose recovery points it can launch, and what it launches from
    # what, for the message that refuses a recovery plan of another kind.
    point_kinds: ClassVar[tuple[str, ...]]
    summary: ClassVar[str]
    # Whether `prepare` moves the point's data through nodes (the RTO forecast's restore
    # part); aws boots from the point's snapshots where they are.
    moves_data: ClassVar[bool] = True

    @abstractmethod
    def __init__(self, settings: dict[str, Any], limiter: Any) -> None:
        """`settings`: the target site's settings with its secrets unsealed
        (inventory.site_settings); `limiter`: the site's, from new_limiter()."""

    # Set by the service from dr-control's [recovery.limits] (0: the provider's default).
    limits: RecoveryLimits = RecoveryLimits()

    @classmethod
    @abstractmethod
    def new_limiter(cls, limits: RecoveryLimits = RecoveryLimits()) -> Any:
        """A limiter for the API calls of every execution against one site: a cloud's
        rate limits are per account (and region), shared with everything else the
        customer runs there; `limits.api_calls_in_flight` (or launches) bounds it."""

    def restores_in_flight(self, default: int) -> int:
        """Disks `prepare` moves at once."""
        return self.limits.restores_in_flight or default

    @classmethod
    def check_points(cls, plan_name: str, target_kind: str) -> None:
        """That the provider launches the recovery points of a protection plan whose
        target is of `target_kind`; InvalidArgument otherwise."""
        if target_kind not in cls.point_kinds:
            raise InvalidArgument(
                f"{plan_name} stores its recovery points as {target_kind}; {cls.summary}: "
                f"use a plan with an {' or '.join(cls.point_kinds)} target",
                field="recovery_plan.protection_plan")

    @classmethod
    @abstractmethod
    def check_workload(cls, where: str, settings: dict[str, Any]) -> dict[str, Any]:
        """A workload's target settings as a recovery plan gives them (every key but
        "workload" and "tags"), checked on their own and normalized for storing;
        InvalidArgument naming the field (`where` + "." + its name) otherwise, also for
        a setting of another provider that is given (not empty)."""

    @classmethod
    def check_plan_settings(cls, workloads: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Checks across a plan's workloads (aws: no IP planned twice); `workloads` are
        (where, normalized settings) pairs, in plan order. Nothing by default."""

    @abstractmethod
    async def check(self, execution: str, groups: Sequence[BootGroup], *,
                    test_mode: bool = False) -> None:
        """Raises InvalidArgument, naming the field, for whatever in `groups` the target
        would refuse; creates nothing."""

    @abstractmethod
    async def prepare(self, execution: str, groups: Sequence[BootGroup], *,
                      mover: DiskMover, on_event: EventSink) -> None:
        """Moves the point's disks where `recover` needs them, through `mover`
        (node tasks); a no-op for providers that boot the point where it is."""

    @abstractmethod
    async def recover(self, execution: str, groups: Sequence[BootGroup], *, test_mode: bool,
                      on_event: EventSink, running_timeout: float) -> list[RecoveredInstance]:
        """Starts the boot groups in order and returns their running workloads; each
        step is reported to `on_event` as it happens. RecoveryFailed when a workload
        fails to launch, or its group is not all running `running_timeout` seconds
        after its launches."""

    @abstractmethod
    async def cleanup(self, execution: str, *, on_event: EventSink) -> dict[str, list[str]]:
        """Deletes what `prepare` and `recover` created for `execution`; returns what
        it deleted, by kind of resource."""


def execution_tags(execution: str, workload: str, test_mode: bool,
                   own: Mapping[str, str] | None = None) -> dict[str, str]:
    """The tags of what recovery creates for a workload: its own tags, then ours last, so
    a workload's own tags can never hide it from cleanup."""
    return {**(own or {}), TAG_EXECUTION: execution, TAG_WORKLOAD: workload,
            TAG_TEST: "true" if test_mode else "false"}


def raise_group_failures(group: BootGroup, results: Sequence[Any], noun: str,
                         execution: str, *, marked: str = "tagged") -> None:
    """After a boot group's workloads were started together (gather with
    return_exceptions): re-raises what is not a failure of ours (cancellation), and
    raises one RecoveryFailed naming every workload that failed and why."""
    failed = [(spec.workload, exc) for spec, exc in zip(group.instances, results)
              if isinstance(exc, BaseException)]
    for _, exc in failed:
        if not isinstance(exc, Exception):
            raise exc
    if failed:
        said = "; ".join(f"{w}: {getattr(e, 'message', e)}" for w, e in failed)
        raise RecoveryFailed(
            f"boot group {group.name!r}: {len(failed)} of {len(group.instances)} {noun} "
            f"failed to start ({said}); what was created is {marked} "
            f"{TAG_EXECUTION}={execution}: run cleanup, or retry the execution")


async def prepare_disks(groups: Sequence[BootGroup],
                        work: Callable[[WorkloadSpec, int], Awaitable[tuple[str, str]]],
                        on_event: EventSink, *, in_flight: int) -> None:
    """A prepare step's loop: `work(spec, index)` makes disk `index` of every workload
    of every group where the site needs it, `in_flight` at a time, all groups at once
    (only booting is ordered); it returns (where the disk is, a note). Each is reported
    as a disk-prepared event with its size, time and throughput (what an RTO forecast
    is made of); the first failure cancels the rest."""
    slots = asyncio.Semaphore(in_flight)

    async def one(group: str, spec: WorkloadSpec, index: int) -> None:
        async with slots:
            started = time.monotonic()
            where, note = await work(spec, index)
        seconds = max(time.monotonic() - started, 1e-6)
        size = spec.disks[index].size_bytes
        on_event(RecoveryEvent(
            time.monotonic(), group, spec.workload, "disk-prepared",
            f"{where}: {size} bytes in {seconds:.1f} s ({size / (1 << 20) / seconds:.1f} "
            f"MiB/s); {note}"))

    async with asyncio.TaskGroup() as tg:
        for g in groups:
            for spec in g.instances:
                for i in range(len(spec.disks)):
                    tg.create_task(one(g.name, spec, i))


def repository_workloads(groups: Sequence[BootGroup], site_kind: str) -> list[WorkloadSpec]:
    """Every workload of the plan, each checked to have a repository manifest for every
    disk (providers that write a point's disks at the site from a repository); raises
    InvalidArgument for a plan without workloads, FailedPrecondition naming the disk."""
    specs = [s for g in groups for s in g.instances]
    if not specs:
        raise InvalidArgument("the recovery plan has no workloads", field="boot_groups")
    for spec in specs:
        missing = [d.disk for d in spec.disks if not d.root_hash]
        if missing or not spec.disks:
            raise FailedPrecondition(
                f"workload {spec.workload}: {', '.join(missing) or 'no disk'} has no "
                f"repository manifest; {site_kind} recovery writes points of "
                f"{' or '.join(REPOSITORY_KINDS)} targets")
    return specs


def whole_number(where: str, key: str, value: Any, default: int, low: int, high: int) -> int:
    """A provider's integer setting `key` (e.g. "kvm.cpus") of workload `where`: its
    default when not given, else a whole number in [low, high]; InvalidArgument naming
    the field otherwise."""
    if value in ("", None, 0, "0"):
        return default
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = -1
    if not low <= n <= high:
        raise InvalidArgument(f"{where}: {key} must be a whole number from {low} to "
                              f"{high}, got {value!r}", field=f"{where}.{key}")
    return n


def refuse_foreign(where: str, settings: dict[str, Any], own: Sequence[str],
                   site_kind: str) -> None:
    """InvalidArgument for a given (non-empty) setting that is not one of `own`: it
    belongs to another provider, and would silently do nothing here."""
    for key in sorted(settings):
        if key not in own and settings[key] not in ("", None, [], {}, 0, ()):
            raise InvalidArgument(
                f"{where}: {key} is not a setting of recovery to a {site_kind} site "
                f"(its settings: {', '.join(own)})", field=f"{where}.{key}")
