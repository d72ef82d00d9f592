"""EC2 recovery against the AWS peer (moto behind tests/peers/aws/): boot groups start in
order, instances land on the planned subnet, security groups and IP with our tags, their
volumes are made from the recovery point's snapshots (same content), cleanup removes
everything but the snapshots, a wrong plan creates nothing, and throttling is survived."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pytest

from dr_common import remote

from dr_common.aws import AwsSettings
from dr_common.errors import InvalidArgument
from dr_control.recovery import aws as recovery
from dr_control.recovery.aws import (
    TAG_EXECUTION,
    BootGroup,
    InstanceSpec,
    RecoveredDisk,
    RecoveryEvent,
    cleanup,
    recover,
)

GiB = 1 << 30
MiB = 1 << 20


# --- a target site with a recovery point --------------------------------------------------

@dataclass
class Site:
    settings: AwsSettings
    ec2: Any  # boto3 client, to set up and to look at what recovery did
    vpc: str
    subnet: str
    web_sg: str
    db_sg: str
    sources: dict[str, str]  # snapshot id -> the volume it was taken from


@pytest.fixture
def site(aws_settings, boto) -> Site:
    ec2 = boto("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.8.1.0/24",
                               AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    web_sg, db_sg = (ec2.create_security_group(GroupName=n, Description=n, VpcId=vpc)["GroupId"]
                     for n in ("web", "db"))
    return Site(aws_settings, ec2, vpc, subnet, web_sg, db_sg, {})


def snapshot_disk(aws_peer: Any, site: Site, device: str, seed: int) -> RecoveredDisk:
    """A 1 GiB source volume with data at its start and end, snapshotted."""
    volume = site.ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
    rnd = random.Random(seed)
    aws_peer.write_volume(volume, 0, rnd.randbytes(MiB))
    aws_peer.write_volume(volume, GiB - MiB, rnd.randbytes(MiB))
    snapshot = site.ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    site.sources[snapshot] = volume
    return RecoveredDisk(device, snapshot, GiB)


def spec(aws_peer: Any, site: Site, workload: str, *, disks: int = 1, **kw: Any) -> InstanceSpec:
    seed = sum(map(ord, workload))
    return InstanceSpec(
        workload=workload,
        disks=tuple(snapshot_disk(aws_peer, site, f"/dev/xvd{chr(ord('a') + i)}", seed + i)
                    for i in range(disks)),
        instance_type=kw.pop("instance_type", "t3.medium"),
        subnet_id=kw.pop("subnet_id", site.subnet),
        security_group_ids=kw.pop("security_group_ids", (site.db_sg,)), **kw)


def two_group_plan(aws_peer: Any, site: Site) -> list[BootGroup]:
    return [
        BootGroup("databases", (
            spec(aws_peer, site, "db-1", disks=2, private_ip="10.8.1.10"),
            spec(aws_peer, site, "db-2"))),
        BootGroup("web", (
            spec(aws_peer, site, "web-1", security_group_ids=(site.web_sg, site.db_sg),
                 tags={"team": "storefront"}),)),
    ]


def tagged(site: Site, execution: str) -> dict[str, list[str]]:
    """What exists tagged with the execution (instances unless terminated)."""
    f = [{"Name": f"tag:{TAG_EXECUTION}", "Values": [execution]}]
    ec2 = site.ec2
    return {
        "instances": [i["InstanceId"] for r in ec2.describe_instances(Filters=f)["Reservations"]
                      for i in r["Instances"] if i["State"]["Name"] != "terminated"],
        "volumes": [v["VolumeId"] for v in ec2.describe_volumes(Filters=f)["Volumes"]],
        "network_interfaces": [n["NetworkInterfaceId"] for n in
                               ec2.describe_network_interfaces(Filters=f)["NetworkInterfaces"]],
        "images": [i["ImageId"] for i in ec2.describe_images(Owners=["self"], Filters=f)["Images"]],
    }


def launches_ok() -> float:
    from prometheus_client import REGISTRY
    return REGISTRY.get_sample_value("dr_target_requests_total", {
        "target": "aws-recovery", "op": "run_instances", "outcome": "ok"}) or 0.0


def recovery_throttles() -> float:
    return sum(s.value for m in remote.THROTTLES.collect() for s in m.samples
               if s.name.endswith("_total") and s.labels["target"] == "aws-recovery")


# --- tests --------------------------------------------------------------------------------

async def test_groups_boot_in_order_on_the_planned_network(aws_peer, site):
    plan = two_group_plan(aws_peer, site)
    events: list[RecoveryEvent] = []
    recovered = await recover(site.settings, "exec-1", plan, test_mode=True,
                              on_event=events.append, running_timeout=30)

    steps = [(e.group, e.workload, e.step) for e in events]
    group1_up = steps.index(("databases", "", "group-running"))
    for workload in ("db-1", "db-2"):
        assert steps.index(("databases", workload, "instance-running")) < group1_up
    web_launched = steps.index(("web", "web-1", "instance-launched"))
    assert web_launched > group1_up
    assert [e.time for e in events] == sorted(e.time for e in events)

    assert [r.workload for r in recovered] == ["db-1", "db-2", "web-1"]
    by_workload = {r.workload: r for r in recovered}
    described = {i["InstanceId"]: i for r in site.ec2.describe_instances(
        InstanceIds=[r.instance_id for r in recovered])["Reservations"] for i in r["Instances"]}
    for group in plan:
        for s in group.instances:
            got = by_workload[s.workload]
            desc = described[got.instance_id]
            assert got.state == desc["State"]["Name"] == "running"
            assert desc["SubnetId"] == s.subnet_id
            assert desc["InstanceType"] == s.instance_type
            assert {g["GroupId"] for n in desc["NetworkInterfaces"] for g in n["Groups"]} == \
                set(s.security_group_ids)
            if s.private_ip:
                assert got.private_ip == desc["PrivateIpAddress"] == s.private_ip
            tags = {t["Key"]: t["Value"] for t in desc["Tags"]}
            assert tags == {**s.tags, "hybrid-dr:execution": "exec-1",
                            "hybrid-dr:workload": s.workload, "hybrid-dr:test": "true"}
            assert desc["RootDeviceName"] == s.disks[0].device_name
            check_volumes(aws_peer, site, s, got.volume_ids)

    # Everything recovery made can be found by its tag: that is what cleanup relies on.
    found = tagged(site, "exec-1")
    assert sorted(found["instances"]) == sorted(r.instance_id for r in recovered)
    assert sorted(found["volumes"]) == sorted(v for r in recovered for v in r.volume_ids)
    assert sorted(found["network_interfaces"]) == \
        sorted(n for r in recovered for n in r.network_interface_ids)
    assert sorted(found["images"]) == sorted(r.image_id for r in recovered)


def check_volumes(aws_peer: Any, site: Site, s: InstanceSpec, volume_ids: tuple[str, ...]) -> None:
    """Each disk became a volume at its device, from its snapshot, with the source's bytes."""
    volumes = site.ec2.describe_volumes(VolumeIds=list(volume_ids))["Volumes"]
    by_device = {v["Attachments"][0]["Device"]: v for v in volumes}
    assert sorted(by_device) == sorted(d.device_name for d in s.disks)
    for d in s.disks:
        volume = by_device[d.device_name]
        assert volume["SnapshotId"] == d.snapshot_id
        assert volume["Size"] * GiB == d.size_bytes
        assert volume["VolumeType"] == "gp3"
        assert aws_peer.volume_sha256(volume["VolumeId"]) == \
            aws_peer.volume_sha256(site.sources[d.snapshot_id])


async def test_cleanup_removes_everything_but_the_snapshots(aws_peer, site):
    plan = two_group_plan(aws_peer, site)
    recovered = await recover(site.settings, "exec-2", plan, test_mode=True, running_timeout=30)
    # Another execution's instance must survive our cleanup.
    other = await recover(site.settings, "exec-other",
                          [BootGroup("g", (spec(aws_peer, site, "x"),))],
                          test_mode=True, running_timeout=30)

    events: list[RecoveryEvent] = []
    deleted = await cleanup(site.settings, "exec-2", on_event=events.append)

    assert sorted(deleted["instances"]) == sorted(r.instance_id for r in recovered)
    assert sorted(deleted["images"]) == sorted(r.image_id for r in recovered)
    assert tagged(site, "exec-2") == {"instances": [], "volumes": [], "network_interfaces": [],
                                      "images": []}
    assert [e.step for e in events] == ["cleanup-instances", "cleanup-volumes",
                                        "cleanup-network-interfaces", "cleanup-images"]
    snapshots = [d.snapshot_id for g in plan for s in g.instances for d in s.disks]
    assert len(site.ec2.describe_snapshots(SnapshotIds=snapshots)["Snapshots"]) == len(snapshots)
    assert tagged(site, "exec-other")["instances"] == [other[0].instance_id]

    again = await cleanup(site.settings, "exec-2")
    assert again == {"instances": [], "volumes": [], "network_interfaces": [], "images": []}


async def test_resumed_execution_does_not_launch_twice(aws_peer, site):
    plan = [BootGroup("g", (spec(aws_peer, site, "app", private_ip="10.8.1.20"),))]
    first = await recover(site.settings, "exec-3", plan, test_mode=False, running_timeout=30)
    again = await recover(site.settings, "exec-3", plan, test_mode=False, running_timeout=30)
    assert again == first
    assert tagged(site, "exec-3")["instances"] == [first[0].instance_id]
    assert len(tagged(site, "exec-3")["images"]) == 1
    tags = {t["Key"]: t["Value"] for t in site.ec2.describe_tags(
        Filters=[{"Name": "resource-id", "Values": [first[0].instance_id]}])["Tags"]}
    assert tags["hybrid-dr:test"] == "false"


@pytest.mark.parametrize("change, field", [
    ({"subnet_id": "subnet-0123456789abcdef0"}, "network_mapping.subnet_id"),
    ({"security_group_ids": ("sg-0123456789abcdef0",)}, "network_mapping.security_group_ids"),
    ({"private_ip": "10.9.0.5"}, "network_mapping.private_ip"),
    ({"private_ip": "10.8.1.10"}, "network_mapping.private_ip"),  # the good one's
    ({"disks": ()}, "disks"),
    ({"instance_type": " "}, "instance_type"),
])
async def test_a_wrong_plan_creates_nothing(aws_peer, site, change, field):
    good = spec(aws_peer, site, "good", private_ip="10.8.1.10")
    bad = InstanceSpec(**{**spec(aws_peer, site, "bad").__dict__, **change})
    plan = [BootGroup("first", (good,)), BootGroup("second", (bad,))]
    with pytest.raises(InvalidArgument) as caught:
        await recover(site.settings, "exec-4", plan, test_mode=True, running_timeout=30)
    assert caught.value.field == field
    assert "'bad'" in caught.value.message
    # Nothing at all was created, not even for the valid first group.
    assert site.ec2.describe_instances()["Reservations"] == []
    assert site.ec2.describe_images(Owners=["self"])["Images"] == []


async def test_throttled_ec2_is_retried_and_counted(aws_peer, site):
    plan = two_group_plan(aws_peer, site)
    throttles_before = recovery_throttles()
    launches_before = launches_ok()
    aws_peer.faults(throttle_rate=0.2, services=["ec2"], seed=7)
    try:
        recovered = await recover(site.settings, "exec-5", plan, test_mode=True,
                                  running_timeout=30)
        deleted = await cleanup(site.settings, "exec-5")
    finally:
        aws_peer.clear_faults()
    assert len(recovered) == 3 and all(r.state == "running" for r in recovered)
    assert sorted(deleted["instances"]) == sorted(r.instance_id for r in recovered)
    assert recovery_throttles() > throttles_before
    assert launches_ok() == launches_before + 3
    assert tagged(site, "exec-5")["instances"] == []


async def test_a_failed_launch_says_what_failed_and_leaves_it_for_cleanup(aws_peer, site):
    # The address is taken by something outside the plan: only the launch can find out.
    image = site.ec2.register_image(Name="someone else's")["ImageId"]
    site.ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SubnetId=site.subnet,
                           PrivateIpAddress="10.8.1.30")
    plan = [BootGroup("databases", (spec(aws_peer, site, "db-1"),)),
            BootGroup("web", (spec(aws_peer, site, "web-1", private_ip="10.8.1.30"),
                              spec(aws_peer, site, "web-2")))]
    events: list[RecoveryEvent] = []
    with pytest.raises(recovery.RecoveryFailed) as caught:
        await recover(site.settings, "exec-6", plan, test_mode=True, on_event=events.append,
                      running_timeout=30)
    assert "'web'" in caught.value.message and "web-1" in caught.value.message
    assert "InvalidIPAddress.InUse" in caught.value.message
    assert "web-2" not in caught.value.message
    assert ("web", "", "group-running") not in [(e.group, e.workload, e.step) for e in events]

    left = tagged(site, "exec-6")
    assert len(left["instances"]) == 2  # db-1 and web-2
    assert len(left["images"]) == 3  # web-1's image was registered before its launch failed
    deleted = await cleanup(site.settings, "exec-6")
    assert sorted(deleted["instances"]) == sorted(left["instances"])
    assert tagged(site, "exec-6") == {"instances": [], "volumes": [], "network_interfaces": [],
                                      "images": []}
