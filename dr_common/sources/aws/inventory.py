"""Inventory of an aws site: one workload per EC2 instance, its attached volumes as disks
(root first); terminated instances are left out."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import structlog

from dr_common.aws import AwsSettings, client
from dr_common.sources.base import DiskInfo, WorkloadInfo
from dr_common.sources.aws.calls import paged

log = structlog.get_logger()
T = TypeVar("T")

# EC2 states whose instances have nothing left to protect.
_GONE = frozenset({"terminated", "shutting-down"})


# --- inventory ------------------------------------------------------------------------

def tag_name(tags: Iterable[dict[str, str]] | None, default: str) -> str:
    return next((t["Value"] for t in tags or () if t.get("Key") == "Name" and t.get("Value")),
                default)


def attached(instance: dict[str, Any]) -> list[tuple[str, str]]:
    """(device, volume id) of an instance's EBS volumes, root first, then by device."""
    root = instance.get("RootDeviceName", "")
    found = [(m["DeviceName"], m["Ebs"]["VolumeId"])
             for m in instance.get("BlockDeviceMappings", ()) if m.get("Ebs", {}).get("VolumeId")]
    return sorted(found, key=lambda dv: (dv[0] != root, dv[0]))


async def instances(ec2: Any, instance_ids: list[str] | None = None) -> list[dict[str, Any]]:
    # EC2 refuses MaxResults together with InstanceIds (and then returns one page).
    params: dict[str, Any] = {"InstanceIds": instance_ids} if instance_ids else {"MaxResults": 1000}
    return [i async for page in paged(ec2, "describe_instances", "list EC2 instances", **params)
            for r in page.get("Reservations", ()) for i in r.get("Instances", ())
            if i.get("State", {}).get("Name") not in _GONE]


async def discover(settings: AwsSettings) -> list[WorkloadInfo]:
    """Inventory of an `aws` site: one workload per live EC2 instance, its attached EBS
    volumes as disks (root first, then by device name)."""
    async with client(settings, "ec2") as ec2:
        live = await instances(ec2)
        sizes = {v["VolumeId"]: int(v["Size"]) async for page in paged(
            ec2, "describe_volumes", "list EBS volumes", MaxResults=500,
            Filters=[{"Name": "attachment.status", "Values": ["attached"]}])
            for v in page.get("Volumes", ())}
    found = []
    for inst in live:
        disks = tuple(DiskInfo(id=vol, display_name=f"{dev} ({vol})", locator=vol,
                               size=sizes[vol] * 2**30, sector_size=512, cbt="ebs-direct")
                      for dev, vol in attached(inst) if vol in sizes)
        iid = inst["InstanceId"]
        found.append(WorkloadInfo(id=iid, display_name=tag_name(inst.get("Tags"), iid),
                                  disks=disks))
    return found


# --- consistency-group snapshots ---------------------------------------------------------


