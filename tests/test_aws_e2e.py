"""AWS end to end, with real daemons and the AWS test peer (moto corrected to the EBS
direct APIs' semantics, tests/peers/aws/): an EC2 instance's volumes protected from
the `aws` source into the `ebs` target and into an `s3` repository; three cycles with
writes between them; every recovery point restored and compared with the source as it
was; incrementals counted block by block; the same under throttling and resets; and
the errors an operator sees for bad input."""

from __future__ import annotations

import json
import random
import uuid

import pytest

from tests.helpers.cluster import daemon_metrics, run_cycle
from tools.localcluster import Cluster, sha256, wait_for

pytestmark = pytest.mark.e2e

BLOCK = 512 * 1024
GiB = 1 << 30
AZ = "us-east-1a"


class Workload:
    """An instance with a root volume and a 1 GiB data volume whose blocks we write."""

    def __init__(self, boto):
        self.peer = boto.peer
        ec2 = boto("ec2")
        image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        # A 1 GiB root (the AMI's default is 8 GiB): restores and hashes stay quick.
        inst = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                                 BlockDeviceMappings=[{"DeviceName": "/dev/sda1",
                                                       "Ebs": {"VolumeSize": 1}}])["Instances"][0]
        self.instance = inst["InstanceId"]
        self.root = inst["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
        self.data = ec2.create_volume(Size=1, AvailabilityZone=AZ)["VolumeId"]
        ec2.attach_volume(VolumeId=self.data, InstanceId=self.instance, Device="/dev/sdf")
        self.rnd = random.Random(7)

    def write_blocks(self, indices: list[int], volume: str = "") -> None:
        for i in indices:
            self.peer.write_volume(volume or self.data, i * BLOCK, self.rnd.randbytes(BLOCK))

    def state(self) -> dict[str, str]:
        return {v: self.peer.volume_sha256(v) for v in (self.root, self.data)}


def _sites(c: Cluster, boto, *, target_path: str = "") -> None:
    common = ["--kind", "aws", "--region", boto.peer.region, "--endpoint-url", boto.peer.endpoint,
              "--access-key-id", boto.key]
    c.drctl("site", "add", "ec2", *common)
    c.drctl("site", "add", "cloud", *common, *(["--path", target_path] if target_path else []))


def _cycle(c: Cluster, plan: str, n: int) -> dict:
    return {k: int(v) for k, v in run_cycle(c, plan, n).get("stats", {}).items()}


def _disk_of(point: dict, volume: str) -> dict:
    return next(d for d in point["disks"] if d["disk"].endswith(f"/disks/{volume}"))


def _restored_sha(c: Cluster, boto, point: dict, volume: str, kind: str) -> str:
    disk = _disk_of(point, volume)["disk"]
    if kind == "ebs":
        out = c.drctl_json("restore", point["name"], "--disk", disk,
                           "--availability-zone", AZ)
        new_volume = out["restore_result"]["volume_id"]
        assert boto("ec2").describe_volumes(VolumeIds=[new_volume])["Volumes"][0][
            "SnapshotId"] == _disk_of(point, volume)["snapshot_id"]
        return boto.peer.volume_sha256(new_volume)
    dest = c.out / f"{uuid.uuid4().hex}.raw"
    c.drctl("restore", point["name"], "--disk", disk, "--to", str(dest))
    return sha256(dest)


def _protect_three_cycles(c: Cluster, boto, kind: str, *, faults: dict | None = None):
    w = Workload(boto)
    w.write_blocks([0, 1, 5, 100, 1000, 2047])
    target_path = ""
    if kind == "s3":
        boto("s3").create_bucket(Bucket="dr-target")
        target_path = "s3://dr-target/plans"
    _sites(c, boto, target_path=target_path)
    if faults:
        boto.peer.faults(**faults)
    expected, stats, peer_stats = [w.state()], [], []
    boto.peer.reset_stats()
    # The scheduler starts the first cycle as soon as the plan exists (its RPO is due).
    c.drctl("plan", "create", "p1", "--source", "ec2", "--target", "cloud",
            "--target-kind", kind, "--workload", f"ec2/{w.instance}", "--rpo", "1h",
            *(["--chunk-size", "512KiB"] if kind == "s3" else []))
    changes = [[], [3, 7, 1000], [0, 1500, 1501, 2047]]
    for n, blocks in enumerate(changes, start=1):
        if n > 1:
            w.write_blocks(blocks)
            expected.append(w.state())
            boto.peer.reset_stats()
        stats.append(_cycle(c, "p1", n))
        peer_stats.append(boto.peer.stats())
    boto.peer.clear_faults()
    points = c.points("p1")
    assert len(points) == 3
    for point, state in zip(points, expected):
        for volume, digest in state.items():
            assert _restored_sha(c, boto, point, volume, kind) == digest, \
                f"{point['name']} {volume} differs from the source at that point"
    return w, points, stats, peer_stats, changes


@pytest.mark.parametrize("kind", ["ebs", "s3"])
def test_three_cycles_restore_equal_and_incrementals_move_only_changed_blocks(
        cluster: Cluster, boto, kind: str):
    w, points, stats, peer_stats, changes = _protect_three_cycles(cluster, boto, kind)
    assert [d.get("full_sync_reason", "") for d in points[0]["disks"]] == ["first-cycle"] * 2
    for n in (1, 2):
        assert all(not d.get("full_sync") for d in points[n]["disks"]), points[n]
        # Only the changed blocks are read at the source and written at the target.
        assert stats[n]["chunks_read"] == len(changes[n]), stats[n]
        assert stats[n]["chunks_sent"] == len(changes[n]), stats[n]
        assert peer_stats[n]["ebs"].get("GetSnapshotBlock", 0) == len(changes[n])
        if kind == "ebs":
            assert peer_stats[n]["ebs"].get("PutSnapshotBlock", 0) == len(changes[n])
    # The first cycle reads what was written, never the unwritten rest of the volumes.
    assert stats[0]["chunks_read"] == 6 and peer_stats[0]["ebs"]["GetSnapshotBlock"] == 6
    if kind == "ebs":
        ec2 = boto("ec2")
        for point in points:
            for d in point["disks"]:
                snap = ec2.describe_snapshots(SnapshotIds=[d["snapshot_id"]])["Snapshots"][0]
                tags = {t["Key"]: t["Value"] for t in snap.get("Tags", [])}
                assert snap["State"] == "completed"
                assert tags["hybrid-dr:recovery-point"] == point["name"].rsplit("/", 1)[-1]
                assert tags["hybrid-dr:plan"] == "plans/p1" and tags["hybrid-dr:disk"] == d["disk"]


@pytest.mark.parametrize("kind", ["ebs", "s3"])
def test_throttling_and_resets_slow_it_down_but_lose_nothing(metered: Cluster, boto, kind: str):
    faults = {"throttle_rate": 0.2, "reset_rate": 0.02, "services": ["ebs", "s3", "ec2"],
              "seed": 5}
    _protect_three_cycles(metered, boto, kind, faults=faults)
    seen = daemon_metrics(metered, "dr_target_throttles_total", "dr_node_throttles_total",
                          "dr_target_retries_total")
    assert seen["dr_target_throttles_total"] + seen["dr_node_throttles_total"] > 0, seen
    assert seen["dr_target_retries_total"] > 0, seen


def test_bad_input_gives_clear_errors_and_nothing_half_visible(cluster: Cluster, boto):
    c = cluster
    code, _, err = c.drctl("site", "add", "mars", "--kind", "aws", "--region", "mars-east-1",
                           check=False)
    assert code != 0 and "unknown AWS region 'mars-east-1'" in err and "Traceback" not in err
    assert all(s["name"] != "sites/mars" for s in c.drctl_json("site", "list"))

    # A vanished snapshot: the point that named it cannot be restored, and says why.
    w = Workload(boto)
    w.write_blocks([0, 9])
    _sites(c, boto)
    c.drctl("plan", "create", "p1", "--source", "ec2", "--target", "cloud",
            "--target-kind", "ebs", "--workload", f"ec2/{w.instance}", "--rpo", "1h")
    _cycle(c, "p1", 1)
    point = c.points("p1")[0]
    gone = _disk_of(point, w.data)["snapshot_id"]
    ec2 = boto("ec2")
    volumes_before = len(ec2.describe_volumes()["Volumes"])
    ec2.delete_snapshot(SnapshotId=gone)
    code, _, err = c.drctl("restore", point["name"], "--disk", _disk_of(point, w.data)["disk"],
                           "--availability-zone", AZ, check=False)
    assert code != 0 and gone in err and "no longer exists" in err, err
    assert len(ec2.describe_volumes()["Volumes"]) == volumes_before
    # The next cycle does not build on the missing snapshot: it writes a whole one.
    w.write_blocks([4])
    _cycle(c, "p1", 2)
    second = c.points("p1")[1]
    assert _disk_of(second, w.data)["full_sync_reason"] == "parent-snapshot-missing"
    assert _restored_sha(c, boto, second, w.data, "ebs") == boto.peer.volume_sha256(w.data)


def _user(boto, name: str, statements: list[dict]) -> tuple[str, str]:
    iam = boto("iam")
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": statements}))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def test_a_bucket_we_may_not_write_fails_the_cycle_clearly(cluster: Cluster, boto, monkeypatch):
    c = cluster
    w = Workload(boto)
    w.write_blocks([0])
    boto("s3").create_bucket(Bucket="locked")
    boto("s3").put_object(Bucket="locked", Key="other", Body=b"x")
    admin = _user(boto, "dr-admin", [{"Effect": "Allow", "Action": "*", "Resource": "*"}])
    reader = _user(boto, "dr-reader", [{"Effect": "Allow", "Resource": "*", "Action": [
        "s3:ListBucket", "s3:HeadBucket", "s3:GetObject"]}])
    common = ["--kind", "aws", "--region", boto.peer.region, "--endpoint-url", boto.peer.endpoint]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", admin[1])
    c.drctl("site", "add", "ec2", *common, "--access-key-id", admin[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", reader[1])
    c.drctl("site", "add", "cloud", *common, "--access-key-id", reader[0],
            "--path", "s3://locked/dr")
    c.drctl("plan", "create", "p1", "--source", "ec2", "--target", "cloud",
            "--target-kind", "s3", "--workload", f"ec2/{w.instance}", "--rpo", "1h")
    with boto.peer.iam_enforced():
        code, _, err = c.drctl("plan", "run", "p1", "--wait", check=False)
        cycle = wait_for(lambda: (lambda cy: cy[0] if cy and cy[0]["state"] == "failed"
                                  else None)(c.cycles("p1")), timeout=120, what="failed cycle")
    assert cycle["error"]["reason"] == "access-denied", cycle["error"]
    assert "locked" in cycle["error"]["message"] and "s3:PutObject" in cycle["error"]["message"]
    assert c.points("p1") == []
    assert boto("s3").list_objects_v2(Bucket="locked")["KeyCount"] == 1  # only "other"
    # No secret in any log of the run, in the API's answers, or in the database file.
    logs = "".join(p.read_text() for p in c.root.glob("*.log"))
    sites = json.dumps(c.drctl_json("site", "list"))
    stored = b"".join(p.read_bytes() for p in c.root.rglob("control.db*"))
    assert stored, "the control plane's database was not found"
    for secret in (admin[1], reader[1]):
        assert secret not in logs and secret not in sites and secret.encode() not in stored
    assert admin[0] in sites  # the key id is not a secret: operators need to see it


def test_sites_without_keys_use_each_daemons_credential_chain(tmp_path, boto, monkeypatch):
    """No keys on the site: dr-control and dr-node find credentials the standard way
    (here the environment; an instance role or a profile in production)."""
    env = boto.peer.env()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", env["AWS_ACCESS_KEY_ID"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", env["AWS_SECRET_ACCESS_KEY"])
    w = Workload(boto)
    w.write_blocks([2, 3])
    with Cluster(tmp_path) as c:
        for site in ("ec2", "cloud"):
            c.drctl("site", "add", site, "--kind", "aws", "--region", boto.peer.region,
                    "--endpoint-url", boto.peer.endpoint)
        c.drctl("plan", "create", "p1", "--source", "ec2", "--target", "cloud",
                "--target-kind", "ebs", "--workload", f"ec2/{w.instance}", "--rpo", "1h")
        _cycle(c, "p1", 1)
        point = c.points("p1")[0]
        assert _restored_sha(c, boto, point, w.data, "ebs") == boto.peer.volume_sha256(w.data)


def test_node_killed_mid_snapshot_resumes_the_same_snapshot(tmp_path, boto):
    """A node dies while putting blocks: the next holder continues the pending EBS
    snapshot from the checkpoint (no second snapshot), and the point restores equal."""
    w = Workload(boto)
    w.write_blocks(list(range(0, 256, 2)))  # 128 blocks, 64 MiB
    expected = boto.peer.volume_sha256(w.data)
    with Cluster(tmp_path, lease_seconds=2, checkpoint_interval=8 << 20,
                 node_env={"DR_NODE_ENGINE__WINDOW_CHUNKS": "4",
                           "DR_NODE_ENGINE__WORKERS": "1"}) as c:
        _sites(c, boto)
        boto.peer.faults(latency_ms=40, services=["ebs"], operations=["PutSnapshotBlock"])
        boto.peer.reset_stats()
        c.drctl("plan", "create", "p1", "--source", "ec2", "--target", "cloud",
                "--target-kind", "ebs", "--disk", f"ec2/{w.instance}/{w.data}", "--rpo", "1h")

        def checkpointed():
            cycles = c.cycles("p1")
            disks = cycles[0].get("disks", []) if cycles else []
            return disks and int(disks[0].get("watermark_bytes", 0)) >= 8 << 20
        wait_for(checkpointed, timeout=60, interval=0.01, what="a checkpoint")
        assert c.kill_node("n1") < 0
        assert c.points("p1") == []
        c.start_node("n2")
        wait_for(lambda: c.points("p1"), timeout=120, what="the recovery point")
        boto.peer.clear_faults()
        point = c.points("p1")[0]
        stats = boto.peer.stats()["ebs"]
        assert stats["StartSnapshot"] == 1, "the resumed task must continue the same snapshot"
        assert 128 <= stats["PutSnapshotBlock"] < 2 * 128
        assert _restored_sha(c, boto, point, w.data, "ebs") == expected
