"""EC2 recovery end to end: real dr-control and dr-node daemons, drctl, and the AWS test peer
(moto corrected to AWS's EBS and AMI semantics). Two EC2 instances are protected into an
`ebs` target by real cycles; a two-group recovery plan is run as a test drill; the boot
order, the recovered volumes' content and the tags are checked against the peer; cleanup
leaves nothing tagged with the execution; a wrong plan fails with the field to fix and
creates nothing; and an execution interrupted by a control-plane restart resumes without
launching twice. The checks of a recovery plan and drctl's --group syntax are also tested
on their own (no daemons)."""

from __future__ import annotations

import json
import random

import pytest

from dr_common.errors import InvalidArgument
from dr_control.cli.commands.recovery import parse_group
from dr_control.cli.errors import UsageError
from dr_control.db.models import Plan
from dr_control.recovery import provider_class
from dr_control.services.recovery import check_boot_groups
from tools.localcluster import Cluster, wait_for

BLOCK = 512 * 1024
AZ = "us-east-1a"
TAG_EXECUTION = "hybrid-dr:execution"


class Source:
    """An EC2 instance with content on its root volume and, optionally, a data volume."""

    def __init__(self, boto, seed: int, *, data_volume: bool):
        self.peer = boto.peer
        ec2 = boto("ec2")
        image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        inst = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1,
                                 InstanceType="t3.micro")["Instances"][0]
        self.instance = inst["InstanceId"]
        self.root = inst["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
        self.volumes = [self.root]
        if data_volume:
            self.data = ec2.create_volume(Size=1, AvailabilityZone=AZ)["VolumeId"]
            ec2.attach_volume(VolumeId=self.data, InstanceId=self.instance, Device="/dev/sdf")
            self.volumes.append(self.data)
        self.rnd = random.Random(seed)

    def write(self, volume: str, blocks: list[int]) -> None:
        for i in blocks:
            self.peer.write_volume(volume, i * BLOCK, self.rnd.randbytes(BLOCK))

    def state(self) -> dict[str, str]:
        return {v: self.peer.volume_sha256(v) for v in self.volumes}


class Target:
    """The recovery site's network: a VPC, a subnet and two security groups."""

    def __init__(self, boto):
        ec2 = boto("ec2")
        self.vpc = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
        self.subnet = ec2.create_subnet(VpcId=self.vpc, CidrBlock="10.8.1.0/24",
                                        AvailabilityZone=AZ)["Subnet"]["SubnetId"]
        self.db_sg, self.web_sg = (
            ec2.create_security_group(GroupName=n, Description=n, VpcId=self.vpc)["GroupId"]
            for n in ("db", "web"))


def _protect(c: Cluster, boto) -> tuple[Source, Source, dict[str, str], dict]:
    """Two instances protected into ebs by one real cycle; returns their state at the point."""
    db = Source(boto, 1, data_volume=True)
    web = Source(boto, 2, data_volume=False)
    db.write(db.root, [0, 1, 40])
    db.write(db.data, [0, 7, 2047])
    web.write(web.root, [0, 3])
    common = ["--kind", "aws", "--region", boto.peer.region, "--endpoint-url", boto.peer.endpoint,
              "--access-key-id", boto.key]
    c.drctl("site", "add", "ec2", *common)
    c.drctl("site", "add", "cloud", *common)
    c.drctl("plan", "create", "p1", "--source", "ec2", "--target", "cloud", "--target-kind",
            "ebs", "--workload", f"ec2/{db.instance}", "--workload", f"ec2/{web.instance}",
            "--rpo", "1h")
    at_point = {**db.state(), **web.state()}
    c.drctl("plan", "run", "p1", "--wait")
    cycles = c.cycles("p1")
    assert [cy["state"] for cy in cycles] == ["completed"], cycles
    (point,) = c.points("p1")
    # Written after the point: recovery must not see it.
    db.write(db.root, [0])
    db.write(db.data, [7])
    web.write(web.root, [3])
    return db, web, at_point, point


def _tagged(boto, execution: str) -> dict[str, list[str]]:
    ec2 = boto("ec2")
    f = [{"Name": f"tag:{TAG_EXECUTION}", "Values": [execution]}]
    return {
        "instances": [i["InstanceId"] for r in ec2.describe_instances(Filters=f)["Reservations"]
                      for i in r["Instances"] if i["State"]["Name"] != "terminated"],
        "volumes": [v["VolumeId"] for v in ec2.describe_volumes(Filters=f)["Volumes"]],
        "network_interfaces": [n["NetworkInterfaceId"] for n in
                               ec2.describe_network_interfaces(Filters=f)["NetworkInterfaces"]],
        "images": [i["ImageId"] for i in ec2.describe_images(Owners=["self"],
                                                             Filters=f)["Images"]],
    }


def _live_instances(boto) -> list[str]:
    return [i["InstanceId"] for r in boto("ec2").describe_instances()["Reservations"]
            for i in r["Instances"] if i["State"]["Name"] != "terminated"]


def _create_two_groups(c: Cluster, db: Source, web: Source, net: Target,
                       rp: str = "rp1") -> None:
    c.drctl("recovery-plan", "create", rp, "--plan", "p1",
            "--group", f"databases:{db.instance}=t3.medium,subnet={net.subnet},"
                       f"sg={net.db_sg},ip=10.8.1.10",
            "--group", f"web:ec2/{web.instance}=t3.small,subnet={net.subnet},"
                       f"sg={net.web_sg},sg={net.db_sg},tag.team=storefront")


@pytest.mark.e2e
def test_two_group_drill_boots_in_order_from_the_point_and_cleans_up(cluster: Cluster, boto):
    c = cluster
    db, web, at_point, point = _protect(c, boto)
    net = Target(boto)
    _create_two_groups(c, db, web, net)
    plan = c.drctl_json("recovery-plan", "get", "rp1")
    assert [g["name"] for g in plan["boot_groups"]] == ["databases", "web"]
    assert plan["boot_groups"][0]["workloads"][0]["workload"] == \
        f"sites/ec2/workloads/{db.instance}"
    assert plan["boot_groups"][1]["workloads"][0]["tags"] == {"team": "storefront"}

    code, out, err = c.drctl("recovery", "run", "rp1", "--test", "--wait", "--output", "json")
    assert code == 0, err
    execution = json.loads(out)
    assert execution["state"] == "completed" and execution["mode"] == "test"
    assert execution["recovery_point"] == point["name"]
    assert "instance-running" in err  # a progress line per step
    name = execution["name"]
    assert name.startswith("recoveryPlans/rp1/executions/")

    # Group 2 launched only after every instance of group 1 was running.
    steps = [(e["group"], e["workload"].rsplit("/", 1)[-1], e["step"])
             for e in execution["events"]]
    group1_up = steps.index(("databases", "", "group-running"))
    assert steps.index(("databases", db.instance, "instance-running")) < group1_up
    assert steps.index(("web", web.instance, "instance-launched")) > group1_up
    # The last group up (no checks: validated at once), then the end.
    assert steps[-3:] == [("web", "", "group-running"), ("web", "", "group-validated"),
                          ("", "", "completed")]

    ec2 = boto("ec2")
    recovered = {i["workload"].rsplit("/", 1)[-1]: i for i in execution["instances"]}
    assert set(recovered) == {db.instance, web.instance}
    for source, instance_type in ((db, "t3.medium"), (web, "t3.small")):
        got = recovered[source.instance]
        desc = ec2.describe_instances(InstanceIds=[got["instance_id"]])[
            "Reservations"][0]["Instances"][0]
        assert got["state"] == desc["State"]["Name"] == "running"
        assert desc["InstanceType"] == instance_type and desc["SubnetId"] == net.subnet
        tags = {t["Key"]: t["Value"] for t in desc["Tags"]}
        assert tags[TAG_EXECUTION] == name and tags["hybrid-dr:test"] == "true"
        # Root first: the source's root volume is the recovered /dev/xvda, its data
        # volume /dev/xvdf, each with the content the source had at the point.
        volumes = ec2.describe_volumes(VolumeIds=got["volume_ids"])["Volumes"]
        by_device = {v["Attachments"][0]["Device"]: v["VolumeId"] for v in volumes}
        expected = {"/dev/xvda": source.root}
        if len(source.volumes) > 1:
            expected["/dev/xvdf"] = source.data
        assert sorted(by_device) == sorted(expected)
        for device, source_volume in expected.items():
            assert boto.peer.volume_sha256(by_device[device]) == at_point[source_volume], \
                f"{device} of {source.instance} differs from the source at the point"
            assert boto.peer.volume_sha256(by_device[device]) != \
                boto.peer.volume_sha256(source_volume)  # the later write is not there
    assert recovered[db.instance]["private_ip"] == "10.8.1.10"
    web_tags = {t["Key"]: t["Value"] for t in ec2.describe_instances(
        InstanceIds=[recovered[web.instance]["instance_id"]])["Reservations"][0][
        "Instances"][0]["Tags"]}
    assert web_tags["team"] == "storefront"

    listed = c.drctl_json("recovery", "list", "rp1")
    assert [e["name"] for e in listed] == [name]
    # A test drill's instances must be cleaned up before its plan can go.
    code, _, err = c.drctl("recovery-plan", "delete", "rp1", check=False)
    assert code == 1 and "cleanup" in err and "Traceback" not in err

    short = name.split("/", 1)[1].replace("executions/", "")
    code, out, err = c.drctl("recovery", "cleanup", short, "--wait", "--output", "json")
    assert code == 0, err
    cleaned = json.loads(out)
    assert cleaned["state"] == "cleaned-up" and cleaned["done"]
    assert [e["step"] for e in cleaned["events"]][-4:] == [
        "cleanup-instances", "cleanup-volumes", "cleanup-network-interfaces", "cleanup-images"]
    assert _tagged(boto, name) == {"instances": [], "volumes": [], "network_interfaces": [],
                                  "images": []}
    # The recovery point's snapshots are kept, and so are the sources.
    snapshots = [d["snapshot_id"] for d in point["disks"]]
    assert len(ec2.describe_snapshots(SnapshotIds=snapshots)["Snapshots"]) == len(snapshots)
    assert sorted(_live_instances(boto)) == sorted([db.instance, web.instance])
    c.drctl("recovery-plan", "delete", "rp1")
    assert c.drctl_json("recovery-plan", "list") == []


@pytest.mark.e2e
def test_a_wrong_plan_fails_with_the_field_and_creates_nothing(cluster: Cluster, boto):
    c = cluster
    db, web, _, _ = _protect(c, boto)
    net = Target(boto)
    before = sorted(_live_instances(boto))

    # An unknown subnet: only EC2 knows, so the run is refused before anything is made.
    c.drctl("recovery-plan", "create", "rp2", "--plan", "p1",
            "--group", f"databases:{db.instance}=t3.medium,subnet={net.subnet},sg={net.db_sg}",
            "--group", f"web:{web.instance}=t3.small,subnet=subnet-0123456789abcdef0,"
                       f"sg={net.web_sg}")
    code, out, err = c.drctl("recovery", "run", "rp2", "--test", "--wait", check=False)
    assert code == 1, (out, err)
    assert "INVALID_ARGUMENT" in err and "subnet-0123456789abcdef0" in err
    assert "field network_mapping.subnet_id" in err and "Traceback" not in err
    assert c.drctl_json("recovery", "list", "rp2") == []
    assert sorted(_live_instances(boto)) == before
    assert boto("ec2").describe_images(Owners=["self"])["Images"] == []

    # What the control plane knows is checked at create time, naming the field.
    for group, field in (
            (f"g:ec2/i-00000000000000000=t3.small,subnet={net.subnet}",
             "recovery_plan.boot_groups[0].workloads[0].workload"),
            (f"g:{db.instance}=t3.small,subnet={net.subnet};{db.instance}=t3.small,"
             f"subnet={net.subnet}", "recovery_plan.boot_groups[0].workloads[1].workload"),
            (f"g:{db.instance}=t3.small,subnet={net.subnet},ip=10.8.1.300",
             "recovery_plan.boot_groups[0].workloads[0].network_mapping.private_ip")):
        code, _, err = c.drctl("recovery-plan", "create", "rp3", "--plan", "p1",
                               "--group", group, check=False)
        assert code == 1 and f"field {field}:" in err, err
    code, _, err = c.drctl("recovery-plan", "create", "rp3", "--plan", "p1",
                           "--group", "g:no-type-here", check=False)
    assert code == 2 and "WORKLOAD=INSTANCE_TYPE" in err
    assert [p["name"] for p in c.drctl_json("recovery-plan", "list")] == ["recoveryPlans/rp2"]


@pytest.mark.e2e
def test_an_execution_interrupted_by_a_restart_resumes_without_launching_twice(
        cluster: Cluster, boto):
    c = cluster
    db, web, at_point, _ = _protect(c, boto)
    net = Target(boto)
    _create_two_groups(c, db, web, net)
    # Slow instance polling down so the restart lands in the middle of the run.
    boto.peer.faults(latency_ms=1500, services=["ec2"], operations=["DescribeInstances"])
    started = c.drctl_json("recovery", "run", "rp1", "--test")
    name = started["name"]
    short = name.split("/", 1)[1].replace("executions/", "")
    wait_for(lambda: any(e["step"] == "instance-launched" for e in
                         c.drctl_json("recovery", "get", short)["events"]),
             timeout=60, what="a first launch")
    c.restart_control()
    boto.peer.clear_faults()
    code, out, err = c.drctl("recovery", "get", short, "--wait", "--output", "json")
    assert code == 0, err
    execution = json.loads(out)
    assert execution["state"] == "completed", execution
    assert "resumed" in [e["step"] for e in execution["events"]]
    tagged = _tagged(boto, name)
    assert len(tagged["instances"]) == 2 and len(tagged["images"]) == 2, tagged
    assert sorted(tagged["instances"]) == sorted(i["instance_id"]
                                                 for i in execution["instances"])
    c.drctl("recovery", "cleanup", short, "--wait")
    assert _tagged(boto, name)["instances"] == []


# --- without daemons: the checks of a recovery plan, and the --group syntax -------------

W1, W2 = "sites/ec2/workloads/i-1", "sites/ec2/workloads/i-2"


def _w(workload: str = W1, **kw) -> dict:
    return {"workload": workload, "instance_type": "t3.small", "subnet_id": "subnet-1",
            "security_group_ids": ["sg-1"], "private_ip": "", "tags": {}, **kw}


@pytest.mark.parametrize("groups, field", [
    ([], "recovery_plan.boot_groups"),
    ([{"name": "", "workloads": [_w()]}], "recovery_plan.boot_groups[0].name"),
    ([{"name": "a", "workloads": []}], "recovery_plan.boot_groups[0].workloads"),
    ([{"name": "a", "workloads": [_w()]}, {"name": "a", "workloads": [_w(W2)]}],
     "recovery_plan.boot_groups[1].name"),
    ([{"name": "a", "workloads": [_w("sites/ec2/workloads/i-9")]}],
     "recovery_plan.boot_groups[0].workloads[0].workload"),
    ([{"name": "a", "workloads": [_w("i-1")]}],
     "recovery_plan.boot_groups[0].workloads[0].workload"),
    ([{"name": "a", "workloads": [_w()]}, {"name": "b", "workloads": [_w(W2), _w()]}],
     "recovery_plan.boot_groups[1].workloads[1].workload"),
    ([{"name": "a", "workloads": [_w(instance_type=" ")]}],
     "recovery_plan.boot_groups[0].workloads[0].instance_type"),
    ([{"name": "a", "workloads": [_w(subnet_id="")]}],
     "recovery_plan.boot_groups[0].workloads[0].network_mapping.subnet_id"),
    ([{"name": "a", "workloads": [_w(private_ip="10.0.0.300")]}],
     "recovery_plan.boot_groups[0].workloads[0].network_mapping.private_ip"),
    ([{"name": "a", "workloads": [_w(private_ip="10.0.0.5"), _w(W2, private_ip="10.0.0.5")]}],
     "recovery_plan.boot_groups[0].workloads[1].network_mapping.private_ip"),
    ([{"name": "a", "workloads": [_w(tags={"hybrid-dr:test": "false"})]}],
     "recovery_plan.boot_groups[0].workloads[0].tags"),
])
def test_recovery_plan_checks_name_the_wrong_field(groups, field):
    plan = Plan(id="p1", workloads=[W1], disks=[f"{W2}/disks/vol-1"])
    with pytest.raises(InvalidArgument) as caught:
        check_boot_groups(plan, groups, provider_class("aws"))
    assert caught.value.field == field, caught.value.message


def test_a_good_recovery_plan_is_normalized():
    plan = Plan(id="p1", workloads=[W1], disks=[f"{W2}/disks/vol-1"])
    groups = check_boot_groups(plan, [
        {"name": " db ", "workloads": [_w(instance_type=" t3.large ", private_ip="10.0.0.5")]},
        {"name": "web", "workloads": [_w(W2, security_group_ids=[], tags={"a": "b"})]}],
        provider_class("aws"))
    assert [g["name"] for g in groups] == ["db", "web"]
    assert groups[0]["workloads"][0]["instance_type"] == "t3.large"
    # Every provider's checks and scripts are stored too (none given: empty).
    assert groups[1]["workloads"][0] == _w(W2, security_group_ids=[], tags={"a": "b"},
                                           checks=[], pre_scripts=[], post_scripts=[])
    assert groups[1]["delay_seconds"] == 0


def test_group_syntax():
    g = parse_group("db:ec2/i-1=t3.medium,subnet=subnet-1,sg=sg-1,sg=sg-2,ip=10.0.0.5,"
                    "tag.team=data;i-2=t3.small,subnet=subnet-2")
    assert g.name == "db"
    first, second = g.workloads
    assert (first.workload, first.instance_type) == ("ec2/i-1", "t3.medium")
    assert first.network_mapping.subnet_id == "subnet-1"
    assert list(first.network_mapping.security_group_ids) == ["sg-1", "sg-2"]
    assert first.network_mapping.private_ip == "10.0.0.5" and dict(first.tags) == {"team": "data"}
    assert (second.workload, second.network_mapping.subnet_id) == ("i-2", "subnet-2")
    for bad in ("no-colon", "g:", "g:i-1", "g:i-1=t3.small,subnet", "g:i-1=t3.small,vpc=v"):
        with pytest.raises(UsageError):
            parse_group(bad)
