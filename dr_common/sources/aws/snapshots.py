"""The consistency group of an aws plan: one crash-consistent `CreateSnapshots` per
instance, tagged and waited for; and the deletion of snapshots no point needs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from typing import Any, TypeVar

import structlog

from dr_common.aws import AwsSettings, client
from dr_common.errors import InvalidArgument, SourceError
from dr_common.sources.aws.calls import call, not_found, paged
from dr_common.sources.aws.inventory import attached, instances

log = structlog.get_logger()
T = TypeVar("T")

# Snapshot completion polling (DescribeSnapshots): from quick to patient.
_POLL_FIRST, _POLL_MAX = 0.5, 15.0


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def _group_spec(instance: dict[str, Any], wanted: list[str]) -> dict[str, Any]:
    """CreateSnapshots' InstanceSpecification that captures exactly `wanted`."""
    iid = instance["InstanceId"]
    volumes = attached(instance)
    missing = sorted(set(wanted) - {vol for _dev, vol in volumes})
    if missing:
        raise InvalidArgument(
            f"volume(s) {', '.join(missing)} are not attached to instance {iid}: run the "
            f"site inventory again and update the plan's disks", field="disks")
    root = instance.get("RootDeviceName", "")
    spec: dict[str, Any] = {"InstanceId": iid}
    if not any(dev == root and vol in wanted for dev, vol in volumes):
        spec["ExcludeBootVolume"] = True
    excluded = [vol for dev, vol in volumes if dev != root and vol not in wanted]
    if excluded:
        spec["ExcludeDataVolumeIds"] = excluded
    return spec


async def snapshot_group(settings: AwsSettings, instance_volumes: dict[str, list[str]], *,
                         tags: dict[str, str], timeout: float,
                         copy_volume_tags: bool = False) -> dict[str, str]:
    """Crash-consistent snapshots of each instance's listed volumes, taken together
    (`CreateSnapshots`), tagged, and waited for until `completed`.

    Returns volume id -> snapshot id. On any failure the snapshots made are deleted, so a
    failed cycle leaves nothing behind."""
    wanted = {iid: vols for iid, vols in instance_volumes.items() if vols}
    made: dict[str, str] = {}
    async with client(settings, "ec2") as ec2:
        try:
            found = {i["InstanceId"]: i for i in await instances(ec2, sorted(wanted))}
            for iid in wanted:
                if iid not in found:
                    raise SourceError(f"instance {iid} is gone (terminated or not found): "
                                      f"remove it from the plan or run the inventory again",
                                      reason="workload-missing", retryable=False)
            specs = [(iid, _group_spec(found[iid], vols)) for iid, vols in wanted.items()]
            results = await asyncio.gather(*(
                _create_group(ec2, iid, spec, tags, copy_volume_tags) for iid, spec in specs),
                return_exceptions=True)
            for result in results:  # keep every snapshot made, even if a sibling failed
                if isinstance(result, dict):
                    made.update(result)
            failed = next((r for r in results if isinstance(r, BaseException)), None)
            if failed is not None:
                raise failed
            extra = {v: s for v, s in made.items()
                     if not any(v in vols for vols in wanted.values())}
            if extra:
                # AWS honours ExcludeDataVolumeIds; a peer that does not still must not
                # leave snapshots nobody will delete.
                await delete(ec2, extra.values())
            made = {v: s for v, s in made.items() if v not in extra}
            await _wait_completed(ec2, made, timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                await delete(ec2, made.values())
            raise
    return made


async def _create_group(ec2: Any, iid: str, spec: dict[str, Any], tags: dict[str, str],
                        copy_volume_tags: bool) -> dict[str, str]:
    params: dict[str, Any] = {
        "InstanceSpecification": spec,
        "Description": f"Hybrid DR consistency group of {iid}",
        "TagSpecifications": [{"ResourceType": "snapshot", "Tags": _tag_list(tags)}]}
    if copy_volume_tags:
        params["CopyTagsFromSource"] = "volume"
    resp = await call(ec2, "create_snapshots", f"snapshot the volumes of {iid}", **params)
    return {s["VolumeId"]: s["SnapshotId"] for s in resp.get("Snapshots", ())}


async def _wait_completed(ec2: Any, snapshots: dict[str, str], timeout: float) -> None:
    """Polls until every snapshot is `completed`; an `error` snapshot fails the group."""
    volume_of = {s: v for v, s in snapshots.items()}
    pending = set(volume_of)
    deadline = time.monotonic() + timeout
    delay = _POLL_FIRST
    while pending:
        resp = await call(ec2, "describe_snapshots", "check snapshot progress",
                           SnapshotIds=sorted(pending))
        for snap in resp.get("Snapshots", ()):
            sid, state = snap["SnapshotId"], snap.get("State", "")
            if state == "error":
                raise SourceError(
                    f"EBS snapshot {sid} of volume {volume_of[sid]} failed "
                    f"({snap.get('StateMessage') or 'no reason given'}): the cycle will "
                    f"retry; if it keeps failing, check the volume in the EC2 console",
                    reason="snapshot-failed", retryable=True)
            if state == "completed":
                pending.discard(sid)
        if not pending:
            return
        if time.monotonic() + delay > deadline:
            vols = ", ".join(sorted(volume_of[s] for s in pending))
            raise SourceError(
                f"EBS snapshots of volume(s) {vols} were not completed within {timeout:g} s: "
                f"a first snapshot of a large volume can take hours; raise the plan's "
                f"snapshot timeout", reason="snapshot-timeout", retryable=True)
        await asyncio.sleep(delay)
        delay = min(_POLL_MAX, delay * 2)


async def delete(ec2: Any, snapshot_ids: Iterable[str]) -> None:
    async def one(sid: str) -> None:
        try:
            await call(ec2, "delete_snapshot", f"delete snapshot {sid}", SnapshotId=sid)
        except SourceError as err:
            if not not_found(err):  # already gone is what we wanted
                raise
    await asyncio.gather(*(one(s) for s in snapshot_ids))


async def delete_snapshots(settings: AwsSettings, snapshot_ids: Iterable[str]) -> None:
    """Deletes snapshots; those already gone are fine."""
    ids = list(snapshot_ids)
    if ids:
        async with client(settings, "ec2") as ec2:
            await delete(ec2, ids)


async def stale_snapshots(settings: AwsSettings, tags: dict[str, str]) -> list[str]:
    """Our snapshots carrying all of `tags` (e.g. a plan's tag), for cleanup."""
    if not tags:
        raise InvalidArgument("give at least one tag: without one every snapshot of the "
                              "account would match", field="tags")
    filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()]
    async with client(settings, "ec2") as ec2:
        return [s["SnapshotId"] async for page in paged(
            ec2, "describe_snapshots", "list snapshots", OwnerIds=["self"], Filters=filters,
            MaxResults=1000) for s in page.get("Snapshots", ())]


# --- block tokens -----------------------------------------------------------------------


