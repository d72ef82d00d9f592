"""The interface every recovery provider offers, and the values it is given and returns.

A provider brings a recovery plan's workloads up at one kind of target site from a
recovery point (DESIGN.md 6). The recovery service (dr_control/services/recovery.py)
finds it by the site's kind in the registry (dr_control.recovery.provider_class), opens
one per call with the site's settings and the API limiter of that site, and knows
nothing else of the platform.

The steps of a recovery and where each is today:
- *check*: everything that can be checked before anything is created (the plan on its
  own, then the target's networks, security groups and snapshots), so that a wrong plan
  fails StartRecovery with the field to fix and creates nothing: `check`.
- *prepare*, *start workload*, *network attach*: `recover` does the three for every
  workload of a boot group (aws: an image registered from the point's snapshots, an
  instance launched from it on its subnet, with its security groups and IP), group after
  group, each starting only when every workload of the one before is running.
- *cleanup*: `cleanup` deletes what `recover` created for an execution (a test drill, a
  failed run); the recovery point itself is never touched.
Steps no provider has yet, and which are therefore not part of the interface: *validate*
(per-workload checks, a TCP port, an HTTP status, a command, that decide `completed`
against `partially-completed`; it arrives with the recovery-orchestration issue), and
*stop* (stopping the recovered or the source workloads, for `migrate`, `failback` and the
end of a test; it arrives with those modes). The first provider that has one adds it
here, for every provider.

Both `recover` and `cleanup` are idempotent: everything a provider creates is tagged
with the execution's name, so running them again after a failure or a control-plane
restart reuses or finds what an earlier attempt made.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dr_common.errors import DRError, InvalidArgument

# --- values -------------------------------------------------------------------------


@dataclass(frozen=True)
class RecoveredDisk:
    """One disk of a recovery point: the snapshot holding it (aws: an EBS snapshot),
    and its size."""

    device_name: str  # e.g. /dev/xvda; the first disk of an instance is its root disk
    snapshot_id: str
    size_bytes: int


@dataclass(frozen=True)
class InstanceSpec:
    """A workload of a boot group with its target settings (size, network mapping, IP)."""

    workload: str
    disks: tuple[RecoveredDisk, ...]
    instance_type: str
    subnet_id: str
    security_group_ids: tuple[str, ...]
    private_ip: str = ""
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BootGroup:
    name: str
    instances: tuple[InstanceSpec, ...]


@dataclass(frozen=True)
class RecoveredInstance:
    workload: str
    instance_id: str
    private_ip: str
    state: str
    volume_ids: tuple[str, ...]
    network_interface_ids: tuple[str, ...]
    image_id: str


@dataclass(frozen=True)
class RecoveryEvent:
    """One step of an execution, for progress, the execution record and tests."""

    time: float  # time.monotonic()
    group: str
    workload: str  # "" for group-wide and cleanup steps
    step: str  # image-registered, instance-launched, instance-running, group-running, cleanup-*
    detail: str = ""


class RecoveryFailed(DRError):
    """A launch failed or an instance did not reach `running`. What was created stays
    tagged with the execution: `cleanup()` removes it, or a retry of the execution
    reuses it."""

    reason = "recovery-failed"


EventSink = Callable[[RecoveryEvent], None]


# --- the interface --------------------------------------------------------------------

class RecoveryProvider(ABC):
    """Recovery at sites of one kind (`kind`, its key in the registry)."""

    kind: ClassVar[str]
    # The target kinds whose recovery points it can launch, and what it launches from
    # what, for the message that refuses a recovery plan of another kind.
    point_kinds: ClassVar[tuple[str, ...]]
    summary: ClassVar[str]

    @abstractmethod
    def __init__(self, settings: dict[str, Any], limiter: Any) -> None:
        """`settings`: the target site's settings with its secrets unsealed
        (inventory.site_settings); `limiter`: the site's, from new_limiter()."""

    @classmethod
    @abstractmethod
    def new_limiter(cls) -> Any:
        """A limiter for the API calls of every execution against one site: a cloud's
        rate limits are per account (and region), shared with everything else the
        customer runs there."""

    @classmethod
    def check_points(cls, plan_name: str, target_kind: str) -> None:
        """That the provider launches the recovery points of a protection plan whose
        target is of `target_kind`; InvalidArgument otherwise."""
        if target_kind not in cls.point_kinds:
            raise InvalidArgument(
                f"{plan_name} stores its recovery points as {target_kind}; {cls.summary}: "
                f"use a plan with an {' or '.join(cls.point_kinds)} target",
                field="recovery_plan.protection_plan")

    @abstractmethod
    async def check(self, execution: str, groups: Sequence[BootGroup]) -> None:
        """Raises InvalidArgument, naming the field, for whatever in `groups` the target
        would refuse; creates nothing."""

    @abstractmethod
    async def recover(self, execution: str, groups: Sequence[BootGroup], *, test_mode: bool,
                      on_event: EventSink, running_timeout: float) -> list[RecoveredInstance]:
        """Starts the boot groups in order and returns their running workloads; each
        step is reported to `on_event` as it happens. RecoveryFailed when a workload
        fails to launch, or its group is not all running `running_timeout` seconds
        after its launches."""

    @abstractmethod
    async def cleanup(self, execution: str, *, on_event: EventSink) -> dict[str, list[str]]:
        """Deletes what `recover` created for `execution`; returns what it deleted, by
        kind of resource."""
