"""EC2 recovery: launching instances from `ebs` recovery points, one boot group at a time.

An `ebs` recovery point is one EBS snapshot per disk, root disk first. To boot it we
register an AMI whose block-device mappings are those snapshots and launch that AMI:
EC2 then creates the volumes from the snapshots itself, which is the fastest way to get
a bootable instance and moves no data through us.

The control plane reaches this module as `AwsProvider`, the `aws` RecoveryProvider
(base.py), through the registry (dr_control.recovery): `recover()` with a recovery
plan's boot groups. Groups start in order — a group starts only when every instance of
the previous one is `running` — and within a group instances launch in parallel, but
through one `ApiLimiter` per provider (a few calls in flight, throttling retried with
backoff and counted), because EC2's API rate limits are per account and region, shared
with everything else the customer runs.

Everything we create (images, instances, and through them volumes and network
interfaces) is tagged `hybrid-dr:execution=<execution>` at creation, so `cleanup()` finds
it all again after a test drill, a failed launch or a control-plane restart, and so a
resumed execution reuses what an earlier attempt launched instead of launching twice.
Snapshots are never deleted here: they are the recovery points.

The module keeps no state between calls; the only global is the process's metrics
registry (the counters below).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from dr_common.aws import AwsSettings, aws_error, client, error_code
from dr_common.errors import DRError, FailedPrecondition, InvalidArgument, NotFound
from dr_common.remote import Remote, RetryPolicy
# The values are base.py's, every provider's; RecoveredDisk is imported for the callers
# of recover() that name them through this module.
from dr_control.config import RecoveryLimits
from dr_control.recovery.base import (TAG_EXECUTION, TAG_WORKLOAD, BootGroup,
                                      DiskMover, EventSink, RecoveredDisk,
                                      RecoveredInstance, RecoveryEvent, RecoveryFailed,
                                      RecoveryProvider, WorkloadSpec, execution_tags,
                                      raise_group_failures, refuse_foreign)

log = structlog.get_logger()

PROVIDER = "aws"

GiB = 1 << 30
# EC2 meters mutating calls per account and region with token buckets of a few calls per
# second (RunInstances: 5/s sustained); a handful in flight keeps one recovery well
# inside them and leaves room for the customer's own automation.
EC2_CONCURRENCY = 4
# One call may be throttled for this long before we give up on it; throttling does not
# use up the retry attempts (see dr_common.remote), real errors do.
CALL_DEADLINE = 120.0
CALL_ATTEMPTS = 4
# Polling for instance state: start fast (moto and small instances are running within a
# second), back off to the cap so a slow boot does not spend the API budget.
POLL_FIRST = 0.2
POLL_CAP = 5.0
TERMINATE_TIMEOUT = 600.0
# States from which an instance will never become `running` without our help.
_DEAD_STATES = frozenset({"shutting-down", "terminated", "stopping", "stopped"})

# The root disk becomes the image's root device; data disks follow from /dev/xvdf, the
# first name EC2's documentation recommends for EBS data volumes of HVM instances.
ROOT_DEVICE = "/dev/xvda"
DATA_DEVICES = tuple(f"/dev/xvd{c}" for c in "fghijklmnopqrstuvwxyz")

# A recovery plan's settings of an EC2 workload (RecoveryWorkload's instance_type and
# network_mapping), as stored.
SETTINGS = ("instance_type", "subnet_id", "security_group_ids", "private_ip")


@dataclass(frozen=True)
class InstanceSpec:
    """A workload of a boot group with its EC2 settings (size, network mapping, IP)."""

    workload: str
    disks: tuple[RecoveredDisk, ...]
    instance_type: str
    subnet_id: str
    security_group_ids: tuple[str, ...]
    private_ip: str = ""
    tags: dict[str, str] = field(default_factory=dict)


def instance_spec(spec: WorkloadSpec) -> InstanceSpec:
    """The EC2 form of a workload the recovery service gives: its disks get their
    devices (root first), and every disk must have an EBS snapshot."""
    missing = [d.disk for d in spec.disks if not d.snapshot_id]
    if missing:
        raise FailedPrecondition(f"workload {spec.workload} has no EBS snapshot for "
                                 f"{', '.join(missing)}: only points of an ebs target can be "
                                 f"launched on EC2")
    if len(spec.disks) > 1 + len(DATA_DEVICES):
        raise FailedPrecondition(f"workload {spec.workload} has {len(spec.disks)} disks; at "
                                 f"most {1 + len(DATA_DEVICES)} can be attached")
    devices = (ROOT_DEVICE, *DATA_DEVICES)
    s = spec.settings
    return InstanceSpec(
        workload=spec.workload,
        disks=tuple(RecoveredDisk(device, d.snapshot_id, d.size_bytes, d.disk, d.root_hash)
                    for device, d in zip(devices, spec.disks)),
        instance_type=s.get("instance_type", ""), subnet_id=s.get("subnet_id", ""),
        security_group_ids=tuple(s.get("security_group_ids", ())),
        private_ip=s.get("private_ip", ""), tags=dict(spec.tags))


def _instance_groups(groups: Sequence[BootGroup]) -> list[BootGroup]:
    return [BootGroup(g.name, tuple(i if isinstance(i, InstanceSpec) else instance_spec(i)
                                    for i in g.instances)) for g in groups]

# --- the per-provider limiter ---------------------------------------------------------

class ApiLimiter:
    """One provider's API calls against one account: at most `concurrency` in flight,
    through the remote-call layer (dr_common.remote: retried there and only there,
    throttling included, and counted as `dr_target_requests_total{target="aws-recovery"}`).
    Share one between concurrent executions against the same account."""

    def __init__(self, provider: str = PROVIDER, concurrency: int = EC2_CONCURRENCY) -> None:
        self.provider = provider
        self.remote = Remote(f"{provider}-recovery", concurrency=concurrency,
                             policy=RetryPolicy(attempts=CALL_ATTEMPTS,
                                                deadline=CALL_DEADLINE),
                             errors=aws_error)

    async def call(self, fn: Callable[..., Awaitable[dict[str, Any]]], what: str,
                   **params: Any) -> dict[str, Any]:
        return await self.remote.call(getattr(fn, "__name__", "call"),
                                      lambda: fn(**params), what=what)


class _Ec2:
    """An EC2 client whose every call goes through the limiter."""

    def __init__(self, ec2: Any, limiter: ApiLimiter) -> None:
        self._ec2 = ec2
        self._limiter = limiter

    async def call(self, op: str, what: str, **params: Any) -> dict[str, Any]:
        return await self._limiter.call(getattr(self._ec2, op), what, **params)

    async def items(self, op: str, key: str, what: str, **params: Any) -> list[dict[str, Any]]:
        """All items of a Describe call, over its pages."""
        found: list[dict[str, Any]] = []
        token = ""
        while True:
            page = await self.call(op, what, **params, **({"NextToken": token} if token else {}))
            found.extend(page.get(key, []))
            token = page.get("NextToken") or ""
            if not token:
                return found

    async def instances(self, what: str, **params: Any) -> list[dict[str, Any]]:
        reservations = await self.items("describe_instances", "Reservations", what, **params)
        return [i for r in reservations for i in r.get("Instances", [])]


# --- recovery -------------------------------------------------------------------------

async def recover(settings: AwsSettings, execution: str, groups: Sequence[BootGroup], *,
                  test_mode: bool, on_event: EventSink | None = None,
                  running_timeout: float = 300.0,
                  limiter: ApiLimiter | None = None) -> list[RecoveredInstance]:
    """Launches the plan's boot groups in order and returns their running instances.

    Validates everything first (locally, then that subnets, security groups and
    snapshots exist) so that a wrong plan creates nothing. Safe to call again for the
    same `execution` after a failure or restart: what exists is reused."""
    _check_plan(execution, groups)
    emit = on_event or (lambda _event: None)
    async with client(settings, "ec2") as ec2_client:
        ec2 = _Ec2(ec2_client, limiter or ApiLimiter())
        await _check_targets(ec2, groups)
        recovered: list[RecoveredInstance] = []
        for group in groups:
            recovered += await _start_group(ec2, execution, group, test_mode, emit,
                                            running_timeout)
        return recovered


async def _start_group(ec2: _Ec2, execution: str, group: BootGroup, test_mode: bool,
                       emit: EventSink, running_timeout: float) -> list[RecoveredInstance]:
    launches = await asyncio.gather(
        *(_launch(ec2, execution, group.name, spec, test_mode, emit) for spec in group.instances),
        return_exceptions=True)
    raise_group_failures(group, launches, "instance(s)", execution)
    launched = {spec.workload: ids for spec, ids in zip(group.instances, launches)
                if isinstance(ids, tuple)}
    running = await _wait_running(ec2, group, launched, running_timeout, emit)
    emit(RecoveryEvent(time.monotonic(), group.name, "", "group-running",
                       f"{len(running)} instance(s) running"))
    return running


async def _launch(ec2: _Ec2, execution: str, group: str, spec: InstanceSpec, test_mode: bool,
                  emit: EventSink) -> tuple[str, str]:
    """Registers the workload's image and launches it; returns (image id, instance id)."""
    tags = _tags(execution, spec, test_mode)
    image_id = await _ensure_image(ec2, execution, spec, tags)
    emit(RecoveryEvent(time.monotonic(), group, spec.workload, "image-registered", image_id))
    instance_id = await _ensure_instance(ec2, execution, spec, image_id, tags)
    emit(RecoveryEvent(time.monotonic(), group, spec.workload, "instance-launched", instance_id))
    return image_id, instance_id


def _tags(execution: str, spec: InstanceSpec, test_mode: bool) -> dict[str, str]:
    return execution_tags(execution, spec.workload, test_mode, spec.tags)


def _tag_specs(tags: dict[str, str], *kinds: str) -> list[dict[str, Any]]:
    pairs = [{"Key": k, "Value": v} for k, v in tags.items()]
    return [{"ResourceType": kind, "Tags": pairs} for kind in kinds]


def _image_name(execution: str, workload: str) -> str:
    """A name unique per execution and workload, within AMI name rules (3-128 of
    letters, digits and ()[] ./-'@_); a digest keeps it unique when it must be cut."""
    raw = f"hybrid-dr {execution} {workload}"
    name = re.sub(r"[^A-Za-z0-9()\[\] ./'@_-]", "_", raw)
    if name != raw or len(name) > 128:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:16]
        name = f"{name[:128 - 17]} {digest}"
    return name


def _client_token(execution: str, workload: str) -> str:
    # EC2 returns the first launch for a repeated token (at most 64 ASCII characters).
    return "hybrid-dr-" + hashlib.sha256(f"{execution}\0{workload}".encode()).hexdigest()[:48]


async def _ensure_image(ec2: _Ec2, execution: str, spec: InstanceSpec,
                        tags: dict[str, str]) -> str:
    name = _image_name(execution, spec.workload)
    existing = await _image_named(ec2, name)
    if existing:
        return existing
    mappings = [{"DeviceName": d.device_name,
                 "Ebs": {"SnapshotId": d.snapshot_id, "VolumeSize": _gib(d.size_bytes),
                         "DeleteOnTermination": True, "VolumeType": "gp3"}}
                for d in spec.disks]
    try:
        response = await ec2.call(
            "register_image", f"register an image for workload {spec.workload!r}",
            Name=name, Description=f"Hybrid DR recovery of {spec.workload}",
            RootDeviceName=spec.disks[0].device_name, VirtualizationType="hvm",
            Architecture="x86_64", EnaSupport=True, BlockDeviceMappings=mappings,
            TagSpecifications=_tag_specs(tags, "image"))
    except DRError as exc:
        # A retried RegisterImage whose first attempt did succeed: use that image.
        if error_code(exc.__cause__) == "InvalidAMIName.Duplicate":
            found = await _image_named(ec2, name)
            if found:
                return found
        raise
    return str(response["ImageId"])


async def _image_named(ec2: _Ec2, name: str) -> str:
    images = await ec2.items("describe_images", "Images", f"look up image {name!r}",
                             Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])
    live = [i for i in images if i.get("State") not in ("deregistered", "failed")]
    return str(live[0]["ImageId"]) if live else ""


async def _ensure_instance(ec2: _Ec2, execution: str, spec: InstanceSpec, image_id: str,
                           tags: dict[str, str]) -> str:
    # The client token makes a retried call idempotent; looking for the tagged instance
    # first also covers a resumed execution whose token EC2 no longer remembers.
    existing = await _instances_tagged(ec2, execution, spec.workload)
    if existing:
        return str(existing[0]["InstanceId"])
    nic: dict[str, Any] = {"DeviceIndex": 0, "SubnetId": spec.subnet_id,
                           "Groups": list(spec.security_group_ids),
                           "DeleteOnTermination": True}
    if spec.private_ip:
        nic["PrivateIpAddress"] = spec.private_ip
    response = await ec2.call(
        "run_instances", f"launch workload {spec.workload!r}",
        ImageId=image_id, InstanceType=spec.instance_type, MinCount=1, MaxCount=1,
        NetworkInterfaces=[nic], ClientToken=_client_token(execution, spec.workload),
        TagSpecifications=_tag_specs(tags, "instance", "volume", "network-interface"))
    return str(response["Instances"][0]["InstanceId"])


async def _instances_tagged(ec2: _Ec2, execution: str, workload: str = "") -> list[dict[str, Any]]:
    """The execution's instances (of one workload when given) that are not terminated."""
    filters = [{"Name": f"tag:{TAG_EXECUTION}", "Values": [execution]},
               {"Name": "instance-state-name",
                "Values": ["pending", "running", "stopping", "stopped", "shutting-down"]}]
    if workload:
        filters.append({"Name": f"tag:{TAG_WORKLOAD}", "Values": [workload]})
    return await ec2.instances(f"list the instances of execution {execution!r}",
                               Filters=filters)


async def _wait_running(ec2: _Ec2, group: BootGroup, launched: dict[str, tuple[str, str]],
                        timeout: float, emit: EventSink) -> list[RecoveredInstance]:
    """Polls until every instance of the group is running; fails on a dead one or at the
    deadline, naming the workload and its state."""
    workload_of = {instance_id: w for w, (_, instance_id) in launched.items()}
    seen: dict[str, dict[str, Any]] = {}
    running: set[str] = set()
    deadline = time.monotonic() + timeout
    delay = POLL_FIRST
    while True:
        for desc in await _describe(ec2, list(workload_of)):
            instance_id = desc["InstanceId"]
            seen[instance_id] = desc
            state = desc.get("State", {}).get("Name", "")
            if state == "running" and instance_id not in running:
                running.add(instance_id)
                emit(RecoveryEvent(time.monotonic(), group.name, workload_of[instance_id],
                                   "instance-running", instance_id))
            elif state in _DEAD_STATES:
                reason = desc.get("StateReason", {}).get("Message", "") or "no reason given"
                raise RecoveryFailed(
                    f"workload {workload_of[instance_id]!r} of boot group {group.name!r} "
                    f"({instance_id}) went {state} instead of running ({reason})")
        if len(running) == len(workload_of):
            return [_recovered(workload_of[i], launched[workload_of[i]][0], seen[i])
                    for i in workload_of]
        if time.monotonic() + delay > deadline:
            late = ", ".join(
                f"{w!r} ({i}, {seen.get(i, {}).get('State', {}).get('Name', 'not visible yet')})"
                for i, w in workload_of.items() if i not in running)
            raise RecoveryFailed(
                f"boot group {group.name!r}: not running after {timeout:g} s: {late}; "
                f"check the instances' console output, or raise the running timeout")
        await asyncio.sleep(delay)
        delay = min(POLL_CAP, delay * 2)


async def _describe(ec2: _Ec2, instance_ids: list[str]) -> list[dict[str, Any]]:
    try:
        return await ec2.instances("check the instances' state", InstanceIds=instance_ids)
    except NotFound:
        # EC2 is eventually consistent: a just-launched id can be unknown for a moment.
        return []


def _recovered(workload: str, image_id: str, desc: dict[str, Any]) -> RecoveredInstance:
    return RecoveredInstance(
        workload=workload, instance_id=desc["InstanceId"],
        private_ip=desc.get("PrivateIpAddress", ""), state=desc["State"]["Name"],
        volume_ids=tuple(m["Ebs"]["VolumeId"] for m in desc.get("BlockDeviceMappings", [])
                         if "Ebs" in m),
        network_interface_ids=tuple(n["NetworkInterfaceId"]
                                    for n in desc.get("NetworkInterfaces", [])),
        image_id=image_id)


def _gib(size_bytes: int) -> int:
    return -(-size_bytes // GiB)


# --- validation -----------------------------------------------------------------------

def _check_plan(execution: str, groups: Sequence[BootGroup]) -> None:
    """What can be checked without calling AWS."""
    if not execution:
        raise InvalidArgument("an execution id is needed (it tags what recovery creates)",
                              field="execution")
    if not any(g.instances for g in groups):
        raise InvalidArgument("the recovery plan has no workloads", field="boot_groups")
    workloads: set[str] = set()
    addresses: set[tuple[str, str]] = set()
    for group in groups:
        for spec in group.instances:
            _check_spec(spec)
            if spec.workload in workloads:
                raise InvalidArgument(f"workload {spec.workload!r} is in the plan twice",
                                      field="workload")
            workloads.add(spec.workload)
            if spec.private_ip and (spec.subnet_id, spec.private_ip) in addresses:
                raise InvalidArgument(f"workload {spec.workload!r}: {spec.private_ip} is "
                                      f"planned for another workload too",
                                      field="network_mapping.private_ip")
            addresses.add((spec.subnet_id, spec.private_ip))


def _check_spec(spec: InstanceSpec) -> None:
    def bad(message: str, field_: str) -> InvalidArgument:
        return InvalidArgument(f"workload {spec.workload!r}: {message}", field=field_)

    if not spec.workload:
        raise InvalidArgument("a workload needs a name", field="workload")
    if not spec.disks:
        raise bad("no disks to recover (the recovery point has no snapshots)", "disks")
    if len({d.device_name for d in spec.disks}) != len(spec.disks):
        raise bad("two disks have the same device name", "disks.device_name")
    for d in spec.disks:
        if not d.device_name or not d.snapshot_id or d.size_bytes <= 0:
            raise bad(f"disk {d.device_name!r} needs a device name, a snapshot and a size",
                      "disks")
    if not spec.instance_type.strip():
        raise bad("an instance type is needed (e.g. t3.medium)", "instance_type")
    if not spec.subnet_id:
        raise bad("a subnet is needed", "network_mapping.subnet_id")
    if spec.private_ip:
        try:
            ipaddress.IPv4Address(spec.private_ip)
        except ValueError:
            raise bad(f"{spec.private_ip!r} is not an IPv4 address",
                      "network_mapping.private_ip") from None


async def _check_targets(ec2: _Ec2, groups: Sequence[BootGroup]) -> None:
    """That the subnets, security groups and snapshots exist and fit together, so a
    wrong plan fails before anything is created."""
    specs = [s for g in groups for s in g.instances]
    subnets = await _existing(ec2, "describe_subnets", "Subnets", "SubnetIds", "SubnetId",
                              _users(specs, lambda s: [s.subnet_id]), "subnet",
                              "network_mapping.subnet_id")
    groups_ = await _existing(ec2, "describe_security_groups", "SecurityGroups", "GroupIds",
                              "GroupId", _users(specs, lambda s: s.security_group_ids),
                              "security group", "network_mapping.security_group_ids")
    snapshots = await _existing(ec2, "describe_snapshots", "Snapshots", "SnapshotIds",
                                "SnapshotId",
                                _users(specs, lambda s: [d.snapshot_id for d in s.disks]),
                                "snapshot", "disks.snapshot_id")
    for spec in specs:
        _check_fit(spec, subnets[spec.subnet_id], groups_, snapshots)


def _users(specs: list[InstanceSpec],
           ids_of: Callable[[InstanceSpec], Iterable[str]]) -> dict[str, list[str]]:
    """Which workloads use each id."""
    users: dict[str, list[str]] = {}
    for spec in specs:
        for ident in ids_of(spec):
            users.setdefault(ident, []).append(spec.workload)
    return users


async def _existing(ec2: _Ec2, op: str, key: str, param: str, id_key: str,
                    users: dict[str, list[str]], kind: str,
                    field_: str) -> dict[str, dict[str, Any]]:
    """Describes each id on its own: a batch fails at the first unknown id without
    saying which, and the error must name it and the workloads that use it."""
    async def one(ident: str) -> dict[str, Any]:
        try:
            found = await ec2.items(op, key, f"look up {kind} {ident}", **{param: [ident]})
        except NotFound:
            found = []
        except DRError as exc:
            code = error_code(exc.__cause__)
            if not (code.endswith(".Malformed") or code == "InvalidID"):  # not even an id
                raise
            found = []
        if not found:
            workloads = ", ".join(repr(w) for w in users[ident])
            raise InvalidArgument(f"{kind} {ident} of workload {workloads} does not exist in "
                                  f"this region and account: fix the recovery plan",
                                  field=field_)
        return found[0]

    described = await asyncio.gather(*(one(i) for i in sorted(users)))
    return {d[id_key]: d for d in described}


def _check_fit(spec: InstanceSpec, subnet: dict[str, Any], groups: dict[str, dict[str, Any]],
               snapshots: dict[str, dict[str, Any]]) -> None:
    for group_id in spec.security_group_ids:
        if groups[group_id].get("VpcId") != subnet.get("VpcId"):
            raise InvalidArgument(
                f"workload {spec.workload!r}: security group {group_id} is not in the VPC of "
                f"subnet {spec.subnet_id} ({subnet.get('VpcId')})",
                field="network_mapping.security_group_ids")
    if spec.private_ip and ipaddress.IPv4Address(spec.private_ip) not in \
            ipaddress.IPv4Network(subnet.get("CidrBlock", "0.0.0.0/0")):
        raise InvalidArgument(
            f"workload {spec.workload!r}: {spec.private_ip} is outside subnet "
            f"{spec.subnet_id} ({subnet.get('CidrBlock')})", field="network_mapping.private_ip")
    for d in spec.disks:
        snapshot_gib = int(snapshots[d.snapshot_id].get("VolumeSize", 0))
        if _gib(d.size_bytes) < snapshot_gib:
            raise InvalidArgument(
                f"workload {spec.workload!r}: disk {d.device_name} is {d.size_bytes} bytes but "
                f"its snapshot {d.snapshot_id} is {snapshot_gib} GiB", field="disks.size_bytes")


# --- cleanup --------------------------------------------------------------------------

async def cleanup(settings: AwsSettings, execution: str, *,
                  on_event: EventSink | None = None,
                  limiter: ApiLimiter | None = None) -> dict[str, list[str]]:
    """Deletes what `recover()` created for `execution`: instances (terminated, waited
    for), then their leftover volumes and network interfaces, then the images. Snapshots
    are kept: they are recovery points. Idempotent; returns what it deleted by kind."""
    if not execution:
        raise InvalidArgument("which execution to clean up?", field="execution")
    emit = on_event or (lambda _event: None)
    async with client(settings, "ec2") as ec2_client:
        ec2 = _Ec2(ec2_client, limiter or ApiLimiter())
        deleted: dict[str, list[str]] = {}
        instances = await _instances_tagged(ec2, execution)
        deleted["instances"] = await _terminate(ec2, instances)
        emit(RecoveryEvent(time.monotonic(), "", "", "cleanup-instances",
                           ", ".join(deleted["instances"])))
        attached_volumes = {m["Ebs"]["VolumeId"] for i in instances
                            for m in i.get("BlockDeviceMappings", []) if "Ebs" in m}
        attached_nics = {n["NetworkInterfaceId"] for i in instances
                         for n in i.get("NetworkInterfaces", [])}
        deleted["volumes"] = await _delete_volumes(ec2, execution, attached_volumes)
        emit(RecoveryEvent(time.monotonic(), "", "", "cleanup-volumes",
                           ", ".join(deleted["volumes"])))
        deleted["network_interfaces"] = await _delete_nics(ec2, execution, attached_nics)
        emit(RecoveryEvent(time.monotonic(), "", "", "cleanup-network-interfaces",
                           ", ".join(deleted["network_interfaces"])))
        deleted["images"] = await _deregister_images(ec2, execution)
        emit(RecoveryEvent(time.monotonic(), "", "", "cleanup-images",
                           ", ".join(deleted["images"])))
        log.info("recovery cleaned up", execution=execution,
                 **{k: len(v) for k, v in deleted.items()})
        return deleted


def _tag_filter(execution: str) -> list[dict[str, Any]]:
    return [{"Name": f"tag:{TAG_EXECUTION}", "Values": [execution]}]


async def _terminate(ec2: _Ec2, instances: list[dict[str, Any]]) -> list[str]:
    ids = sorted(i["InstanceId"] for i in instances)
    if not ids:
        return []
    await ec2.call("terminate_instances", f"terminate {', '.join(ids)}", InstanceIds=ids)
    # Volumes and interfaces are released only once the instance is terminated.
    deadline = time.monotonic() + TERMINATE_TIMEOUT
    delay = POLL_FIRST
    while True:
        left = [i for i in await _describe(ec2, ids)
                if i.get("State", {}).get("Name") != "terminated"]
        if not left:
            return ids
        if time.monotonic() + delay > deadline:
            raise RecoveryFailed(f"instances still not terminated after {TERMINATE_TIMEOUT:g} s: "
                                 f"{', '.join(i['InstanceId'] for i in left)}; run cleanup again")
        await asyncio.sleep(delay)
        delay = min(POLL_CAP, delay * 2)


async def _tagged_or_listed(ec2: _Ec2, op: str, key: str, param: str, id_key: str,
                            execution: str, listed: set[str]) -> list[dict[str, Any]]:
    """Resources tagged with the execution, and those `listed` (attached to its
    instances) in case their tags did not land; ones already gone are skipped."""
    found = {r[id_key]: r for r in await ec2.items(op, key, f"list {key}",
                                                   Filters=_tag_filter(execution))}
    for ident in sorted(listed - set(found)):
        try:
            for r in await ec2.items(op, key, f"look up {ident}", **{param: [ident]}):
                found[r[id_key]] = r
        except NotFound:
            pass
    return [found[k] for k in sorted(found)]


async def _delete_volumes(ec2: _Ec2, execution: str, attached: set[str]) -> list[str]:
    volumes = await _tagged_or_listed(ec2, "describe_volumes", "Volumes", "VolumeIds",
                                      "VolumeId", execution, attached)
    deleted = []
    for v in volumes:
        if v.get("State") in ("deleting", "deleted"):
            continue
        if v.get("Attachments"):
            await _forgiving(ec2.call("detach_volume", f"detach {v['VolumeId']}",
                                      VolumeId=v["VolumeId"]))
            await _until(ec2, "describe_volumes", "Volumes", "VolumeIds", v["VolumeId"],
                         lambda r: r.get("State") == "available")
        if await _forgiving(ec2.call("delete_volume", f"delete {v['VolumeId']}",
                                     VolumeId=v["VolumeId"])):
            deleted.append(v["VolumeId"])
    return deleted


async def _delete_nics(ec2: _Ec2, execution: str, attached: set[str]) -> list[str]:
    nics = await _tagged_or_listed(ec2, "describe_network_interfaces", "NetworkInterfaces",
                                   "NetworkInterfaceIds", "NetworkInterfaceId", execution,
                                   attached)
    deleted = []
    for n in nics:
        nic_id = n["NetworkInterfaceId"]
        attachment = n.get("Attachment") or {}
        if attachment.get("AttachmentId") and attachment.get("Status") != "detached":
            await _forgiving(ec2.call("detach_network_interface", f"detach {nic_id}",
                                      AttachmentId=attachment["AttachmentId"]))
            await _until(ec2, "describe_network_interfaces", "NetworkInterfaces",
                         "NetworkInterfaceIds", nic_id,
                         lambda r: r.get("Status") == "available")
        if await _forgiving(ec2.call("delete_network_interface", f"delete {nic_id}",
                                     NetworkInterfaceId=nic_id)):
            deleted.append(nic_id)
    return deleted


async def _deregister_images(ec2: _Ec2, execution: str) -> list[str]:
    images = await ec2.items("describe_images", "Images", "list the execution's images",
                             Owners=["self"], Filters=_tag_filter(execution))
    deleted = []
    for image in sorted(images, key=lambda i: i["ImageId"]):
        # DeregisterImage keeps the image's snapshots (we never pass
        # DeleteAssociatedSnapshots): they are the recovery point.
        if await _forgiving(ec2.call("deregister_image", f"deregister {image['ImageId']}",
                                     ImageId=image["ImageId"])):
            deleted.append(image["ImageId"])
    return deleted


async def _forgiving(call: Awaitable[Any]) -> bool:
    """Runs a delete; False if the thing is already gone (cleanup is idempotent)."""
    try:
        await call
    except NotFound:
        return False
    return True


async def _until(ec2: _Ec2, op: str, key: str, param: str, ident: str,
                 done: Callable[[dict[str, Any]], bool]) -> None:
    deadline = time.monotonic() + TERMINATE_TIMEOUT
    delay = POLL_FIRST
    while time.monotonic() < deadline:
        try:
            found = await ec2.items(op, key, f"look up {ident}", **{param: [ident]})
        except NotFound:
            return
        if not found or done(found[0]):
            return
        await asyncio.sleep(delay)
        delay = min(POLL_CAP, delay * 2)
    raise RecoveryFailed(f"{ident} did not detach within {TERMINATE_TIMEOUT:g} s; "
                         f"run cleanup again")


# --- the provider ---------------------------------------------------------------------

class AwsProvider(RecoveryProvider):
    """EC2 recovery as the registry's `aws` provider: recover() and cleanup() above, on
    the target site's settings and limiter."""

    kind = PROVIDER
    point_kinds = ("ebs",)
    summary = "EC2 recovery launches EBS snapshots"
    moves_data = False

    @classmethod
    def check_workload(cls, where: str, settings: dict[str, Any]) -> dict[str, Any]:
        refuse_foreign(where, settings, SETTINGS, PROVIDER)
        instance_type = str(settings.get("instance_type", "")).strip()
        if not instance_type:
            raise InvalidArgument(f"{where}: an instance type is needed (e.g. t3.medium)",
                                  field=f"{where}.instance_type")
        subnet = str(settings.get("subnet_id", "")).strip()
        if not subnet:
            raise InvalidArgument(f"{where}: a subnet is needed",
                                  field=f"{where}.network_mapping.subnet_id")
        groups = [str(g).strip() for g in settings.get("security_group_ids", ())]
        if not all(groups):
            raise InvalidArgument(f"{where}: a security group id is empty",
                                  field=f"{where}.network_mapping.security_group_ids")
        ip = str(settings.get("private_ip", "")).strip()
        if ip:
            try:
                ipaddress.IPv4Address(ip)
            except ValueError:
                raise InvalidArgument(f"{where}: {ip!r} is not an IPv4 address",
                                      field=f"{where}.network_mapping.private_ip") from None
        return {"instance_type": instance_type, "subnet_id": subnet,
                "security_group_ids": groups, "private_ip": ip}

    @classmethod
    def check_plan_settings(cls, workloads: Sequence[tuple[str, dict[str, Any]]]) -> None:
        addresses: dict[tuple[str, str], str] = {}
        for where, settings in workloads:
            if not settings["private_ip"]:
                continue
            key = (settings["subnet_id"], settings["private_ip"])
            if key in addresses:
                raise InvalidArgument(f"{settings['private_ip']} is planned for "
                                      f"{addresses[key]} too",
                                      field=f"{where}.network_mapping.private_ip")
            addresses[key] = where

    def __init__(self, settings: dict[str, Any], limiter: ApiLimiter) -> None:
        self.settings = AwsSettings(**settings)
        self.limiter = limiter

    @classmethod
    def new_limiter(cls, limits: RecoveryLimits = RecoveryLimits()) -> ApiLimiter:
        return ApiLimiter(concurrency=limits.api_calls_in_flight or EC2_CONCURRENCY)

    async def check(self, execution: str, groups: Sequence[BootGroup], *,
                    test_mode: bool = False) -> None:
        """What recover() checks before it creates anything."""
        groups = _instance_groups(groups)
        _check_plan(execution, groups)
        async with client(self.settings, "ec2") as ec2:
            # On a limiter of its own, as StartRecovery's check always ran; whether it
            # should share the site's is for the shared remote-call layer to decide.
            await _check_targets(_Ec2(ec2, ApiLimiter()), groups)

    async def prepare(self, execution: str, groups: Sequence[BootGroup], *,
                      mover: DiskMover, on_event: EventSink) -> None:
        """Nothing to move: the image registered in recover() makes EC2 create the
        volumes from the point's snapshots itself."""

    async def recover(self, execution: str, groups: Sequence[BootGroup], *, test_mode: bool,
                      on_event: EventSink, running_timeout: float) -> list[RecoveredInstance]:
        return await recover(self.settings, execution, _instance_groups(groups),
                             test_mode=test_mode,
                             on_event=on_event, running_timeout=running_timeout,
                             limiter=self.limiter)

    async def cleanup(self, execution: str, *, on_event: EventSink) -> dict[str, list[str]]:
        return await cleanup(self.settings, execution, on_event=on_event, limiter=self.limiter)
