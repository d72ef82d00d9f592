"""Tests of the AWS test peer (tests/peers/aws/) against the AWS API reference: the EBS
direct APIs, volumes with block content, EC2 snapshots of them, and injected faults, all
through boto3 as the product's SDK would see them."""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from types import SimpleNamespace

import pytest
from botocore.config import Config
from botocore.exceptions import (BotoCoreError, ClientError, ConnectionClosedError,
                                 EndpointConnectionError, ReadTimeoutError)

BLOCK = 524288
GiB = 1 << 30


@pytest.fixture
def boto_once(boto):
    """boto3 clients on the peer that try once each, so faults surface unretried:
    `.ebs`, `.ec2`, `.s3`, and `.ebs_unchecked`, which sends what botocore would refuse,
    to test the server's own checks; `.peer` is the peer's client."""
    once = Config(retries={"total_max_attempts": 1, "mode": "standard"})
    unchecked = once.merge(Config(parameter_validation=False))
    return SimpleNamespace(ebs=boto("ebs", config=once), ec2=boto("ec2", config=once),
                           s3=boto("s3", config=once), peer=boto.peer,
                           ebs_unchecked=boto("ebs", config=unchecked))


def checksum(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def block_of(byte: int) -> bytes:
    return bytes([byte]) * BLOCK


def put(ebs, snapshot_id: str, index: int, data: bytes, **overrides):
    args = dict(SnapshotId=snapshot_id, BlockIndex=index, BlockData=data, DataLength=len(data),
                Checksum=checksum(data), ChecksumAlgorithm="SHA256")
    return ebs.put_snapshot_block(**{**args, **overrides})


def direct_snapshot(ebs, blocks: dict[int, bytes], parent: str | None = None, size: int = 1) -> str:
    """A completed snapshot written with the EBS direct APIs."""
    extra = {"ParentSnapshotId": parent} if parent else {}
    snapshot_id = ebs.start_snapshot(VolumeSize=size, **extra)["SnapshotId"]
    for index, data in blocks.items():
        put(ebs, snapshot_id, index, data)
    ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=len(blocks))
    return snapshot_id


def read_block(ebs, snapshot_id: str, index: int, token: str) -> bytes:
    return ebs.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=index,
                                  BlockToken=token)["BlockData"].read()


def tokens(ebs, snapshot_id: str) -> dict[int, str]:
    blocks = ebs.list_snapshot_blocks(SnapshotId=snapshot_id)["Blocks"]
    return {b["BlockIndex"]: b["BlockToken"] for b in blocks}


def snapshot_content(ebs, snapshot_id: str) -> dict[int, bytes]:
    return {i: read_block(ebs, snapshot_id, i, t) for i, t in tokens(ebs, snapshot_id).items()}


def error_of(excinfo) -> tuple[str, int]:
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def new_volume(boto_once, size: int = 1) -> str:
    return boto_once.ec2.create_volume(Size=size, AvailabilityZone="us-east-1a")["VolumeId"]


def ec2_snapshot(boto_once, volume_id: str) -> str:
    return boto_once.ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]


def volume_from(boto_once, snapshot_id: str) -> str:
    return boto_once.ec2.create_volume(SnapshotId=snapshot_id,
                                       AvailabilityZone="us-east-1a")["VolumeId"]


def changed_blocks(ebs, first: str, second: str) -> list[dict]:
    return ebs.list_changed_blocks(FirstSnapshotId=first, SecondSnapshotId=second)["ChangedBlocks"]


# --- EBS direct APIs -------------------------------------------------------------------


def test_start_snapshot_is_pending_until_completed_and_leaves_no_volume(boto_once):
    started = boto_once.ebs.start_snapshot(VolumeSize=1, Tags=[{"Key": "site", "Value": "a"}])
    snapshot_id = started["SnapshotId"]
    assert (started["BlockSize"], started["Status"]) == (BLOCK, "pending")

    def ec2_view():
        return boto_once.ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]

    assert ec2_view()["State"] == "pending"
    assert ec2_view()["Tags"] == [{"Key": "site", "Value": "a"}]
    assert boto_once.ec2.describe_volumes()["Volumes"] == []
    completed = boto_once.ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=0)
    assert completed["Status"] == "completed"
    assert ec2_view()["State"] == "completed"


HALF = b"x" * (BLOCK // 2)


@pytest.mark.parametrize("overrides", [
    {"Checksum": checksum(b"other")},
    {"DataLength": BLOCK // 2},
    {"BlockData": HALF, "DataLength": len(HALF), "Checksum": checksum(HALF)},
    {"BlockIndex": GiB // BLOCK},  # one past the end of a 1 GiB volume
], ids=["checksum", "data-length", "short-block", "index-out-of-range"])
def test_put_snapshot_block_validates(boto_once, overrides):
    snapshot_id = boto_once.ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    with pytest.raises(ClientError) as e:
        put(boto_once.ebs, snapshot_id, 0, block_of(1), **overrides)
    assert error_of(e) == ("ValidationException", 400)
    # nothing was stored: completing with zero blocks is accepted
    boto_once.ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=0)


def linear_checksum(*blocks: bytes) -> str:
    return checksum(b"".join(hashlib.sha256(b).digest() for b in blocks))


@pytest.mark.parametrize("count, aggregate, ok", [
    (2, linear_checksum(block_of(1), block_of(2)), True),
    (1, None, False),
    (3, None, False),
    (2, linear_checksum(block_of(2), block_of(1)), False),  # index order matters
])
def test_complete_snapshot_checks_count_and_linear_checksum(boto_once, count, aggregate, ok):
    snapshot_id = boto_once.ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    put(boto_once.ebs, snapshot_id, 7, block_of(2))
    put(boto_once.ebs, snapshot_id, 3, block_of(1))
    put(boto_once.ebs, snapshot_id, 7, block_of(2))  # the same index twice counts once
    extra = ({"Checksum": aggregate, "ChecksumAlgorithm": "SHA256",
              "ChecksumAggregationMethod": "LINEAR"} if aggregate else {})
    if ok:
        boto_once.ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=count, **extra)
        with pytest.raises(ClientError) as e:
            put(boto_once.ebs, snapshot_id, 0, block_of(3))  # completed snapshots are read-only
    else:
        with pytest.raises(ClientError) as e:
            boto_once.ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=count,
                                            **extra)
    assert error_of(e) == ("ValidationException", 400)


def test_reads_need_a_completed_snapshot(boto_once):
    snapshot_id = boto_once.ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    put(boto_once.ebs, snapshot_id, 0, block_of(1))
    with pytest.raises(ClientError) as e:
        boto_once.ebs.list_snapshot_blocks(SnapshotId=snapshot_id)
    assert error_of(e) == ("ValidationException", 400)


def test_child_inherits_parent_blocks_and_changed_blocks_are_the_written_ones(boto_once):
    parent = direct_snapshot(boto_once.ebs, {0: block_of(1), 1: block_of(2), 5: block_of(3)})
    child = direct_snapshot(boto_once.ebs, {1: block_of(9), 6: block_of(4)}, parent=parent)
    expected = {0: block_of(1), 1: block_of(9), 5: block_of(3), 6: block_of(4)}
    assert snapshot_content(boto_once.ebs, child) == expected
    changed = changed_blocks(boto_once.ebs, parent, child)
    assert [c["BlockIndex"] for c in changed] == [1, 6]
    one, six = changed
    assert read_block(boto_once.ebs, parent, 1, one["FirstBlockToken"]) == block_of(2)
    assert read_block(boto_once.ebs, child, 1, one["SecondBlockToken"]) == block_of(9)
    assert "FirstBlockToken" not in six


def test_parent_must_exist_be_completed_and_not_be_larger(boto_once):
    pending = boto_once.ebs.start_snapshot(VolumeSize=2)["SnapshotId"]
    for parent, expected in [("snap-0000000000000000f", ("ResourceNotFoundException", 404)),
                             (pending, ("ValidationException", 400))]:
        with pytest.raises(ClientError) as e:
            boto_once.ebs.start_snapshot(VolumeSize=2, ParentSnapshotId=parent)
        assert error_of(e) == expected
    boto_once.ebs.complete_snapshot(SnapshotId=pending, ChangedBlocksCount=0)
    with pytest.raises(ClientError) as e:
        boto_once.ebs.start_snapshot(VolumeSize=1, ParentSnapshotId=pending)
    assert error_of(e) == ("ValidationException", 400)


@pytest.mark.parametrize("call", [
    lambda ebs, s: ebs.list_snapshot_blocks(SnapshotId=s),
    lambda ebs, s: ebs.list_changed_blocks(SecondSnapshotId=s),
    lambda ebs, s: ebs.get_snapshot_block(SnapshotId=s, BlockIndex=0, BlockToken="x"),
    lambda ebs, s: put(ebs, s, 0, block_of(1)),
    lambda ebs, s: ebs.complete_snapshot(SnapshotId=s, ChangedBlocksCount=0),
], ids=["ListSnapshotBlocks", "ListChangedBlocks", "GetSnapshotBlock", "PutSnapshotBlock",
        "CompleteSnapshot"])
def test_unknown_snapshot_is_404_resource_not_found(boto_once, call):
    with pytest.raises(ClientError) as e:
        call(boto_once.ebs, "snap-0123456789abcdef0")
    assert error_of(e) == ("ResourceNotFoundException", 404)


def test_pagination_returns_every_block_once(boto_once):
    volume_id = new_volume(boto_once)
    written = list(range(0, 2 * 150, 2))
    for index in written:
        boto_once.peer.write_volume(volume_id, index * BLOCK, b"\x01")
    snapshot_id = ec2_snapshot(boto_once, volume_id)

    def all_pages(list_call, key):
        seen, args = [], {"MaxResults": 100}
        while True:
            page = list_call(**args)
            assert len(page[key]) <= 100 and page["BlockSize"] == BLOCK and page["VolumeSize"] == 1
            seen += [b["BlockIndex"] for b in page[key]]
            if "NextToken" not in page:
                return seen
            args = {"MaxResults": 100, "NextToken": page["NextToken"]}

    assert all_pages(lambda **a: boto_once.ebs.list_snapshot_blocks(SnapshotId=snapshot_id, **a),
                     "Blocks") == written
    assert all_pages(lambda **a: boto_once.ebs.list_changed_blocks(SecondSnapshotId=snapshot_id,
                                                                   **a),
                     "ChangedBlocks") == written
    from_101 = boto_once.ebs.list_snapshot_blocks(SnapshotId=snapshot_id,
                                            StartingBlockIndex=101)["Blocks"]
    assert [b["BlockIndex"] for b in from_101] == [i for i in written if i >= 101]
    with pytest.raises(ClientError) as e:
        boto_once.ebs_unchecked.list_snapshot_blocks(SnapshotId=snapshot_id, MaxResults=99)
    assert error_of(e) == ("ValidationException", 400)


def test_block_tokens_expire_and_are_bound_to_their_block(boto_once):
    snapshot_id = direct_snapshot(boto_once.ebs, {0: block_of(1), 1: block_of(2)})
    listed = tokens(boto_once.ebs, snapshot_id)
    with pytest.raises(ClientError) as e:
        read_block(boto_once.ebs, snapshot_id, 1, listed[0])
    assert error_of(e) == ("ValidationException", 400)
    boto_once.peer.faults(token_lifetime_seconds=0.2)
    short_lived = tokens(boto_once.ebs, snapshot_id)
    assert read_block(boto_once.ebs, snapshot_id, 0, short_lived[0]) == block_of(1)
    time.sleep(0.3)  # past the token's lifetime
    with pytest.raises(ClientError) as e:
        read_block(boto_once.ebs, snapshot_id, 0, short_lived[0])
    assert error_of(e) == ("ValidationException", 400)
    assert e.value.response["Reason"] == "INVALID_BLOCK_TOKEN"


# --- Volumes with content and EC2 snapshots of them ------------------------------------


def test_volume_write_is_captured_by_create_snapshot(boto_once):
    volume_id = new_volume(boto_once)
    boto_once.peer.write_volume(volume_id, 3 * BLOCK + 10, b"hello")
    boto_once.peer.write_volume(volume_id, 5 * BLOCK - 2, b"span")  # across blocks 4 and 5
    assert boto_once.peer.read_volume(volume_id, 3 * BLOCK + 8, 9) == b"\0\0hello\0\0"
    snapshot_id = ec2_snapshot(boto_once, volume_id)
    content = snapshot_content(boto_once.ebs, snapshot_id)
    assert sorted(content) == [3, 4, 5]
    assert content[3] == bytes(10) + b"hello" + bytes(BLOCK - 15)
    assert content[4].endswith(b"sp") and content[5].startswith(b"an")


def test_changed_blocks_between_volume_snapshots_are_exactly_the_writes(boto_once):
    volume_id = new_volume(boto_once)
    for index in (0, 1, 2):
        boto_once.peer.write_volume(volume_id, index * BLOCK, b"first")
    first = ec2_snapshot(boto_once, volume_id)
    for index in (1, 9):
        boto_once.peer.write_volume(volume_id, index * BLOCK, b"second")
    second = ec2_snapshot(boto_once, volume_id)
    changed = changed_blocks(boto_once.ebs, first, second)
    assert [c["BlockIndex"] for c in changed] == [1, 9]
    assert read_block(boto_once.ebs, second, 9,
                      changed[1]["SecondBlockToken"]).startswith(b"second")


def test_create_volume_from_snapshot_has_the_source_content(boto_once):
    source = new_volume(boto_once)
    boto_once.peer.write_volume(source, 7 * BLOCK + 3, b"data" * 1000)
    at_snapshot = boto_once.peer.volume_sha256(source)
    snapshot_id = ec2_snapshot(boto_once, source)
    boto_once.peer.write_volume(source, 0, b"later")
    assert boto_once.peer.volume_sha256(source) != at_snapshot
    restored = volume_from(boto_once, snapshot_id)
    assert boto_once.peer.volume_sha256(restored) == at_snapshot


def test_volume_sha256_is_of_the_raw_image(boto_once):
    volume_id = new_volume(boto_once)
    boto_once.peer.write_volume(volume_id, GiB - 4, b"tail")
    expected = hashlib.sha256()
    zeros = bytes(1 << 24)
    for _ in range(GiB // len(zeros) - 1):
        expected.update(zeros)
    expected.update(zeros[:-4] + b"tail")
    assert boto_once.peer.volume_sha256(volume_id) == expected.hexdigest()
    boto_once.peer.discard_volume(volume_id, GiB - BLOCK, BLOCK)
    assert tokens(boto_once.ebs, ec2_snapshot(boto_once, volume_id)) == {}


def test_create_volume_from_direct_snapshot(boto_once):
    snapshot_id = direct_snapshot(boto_once.ebs, {2: block_of(7)})
    volume_id = volume_from(boto_once, snapshot_id)
    assert boto_once.peer.read_volume(volume_id, 2 * BLOCK - 1, 2) == b"\0\x07"


def test_create_snapshots_of_an_instance_captures_its_volumes(boto_once):
    image_id = boto_once.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = boto_once.ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1)["Instances"][0]
    instance_id = instance["InstanceId"]
    attached = [{"Name": "attachment.instance-id", "Values": [instance_id]}]
    volume_id = boto_once.ec2.describe_volumes(Filters=attached)["Volumes"][0]["VolumeId"]
    boto_once.peer.write_volume(volume_id, BLOCK, b"boot")
    spec = {"InstanceId": instance_id}
    snapshots = boto_once.ec2.create_snapshots(InstanceSpecification=spec)["Snapshots"]
    assert [s["VolumeId"] for s in snapshots] == [volume_id]
    assert snapshot_content(boto_once.ebs, snapshots[0]["SnapshotId"])[1].startswith(b"boot")


# --- Faults and counters ---------------------------------------------------------------


def test_throttled_put_is_ebs_429_and_stores_nothing(boto_once):
    snapshot_id = boto_once.ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    boto_once.peer.reset_stats()
    boto_once.peer.faults(throttle_rate=1.0, services=["ebs"], operations=["PutSnapshotBlock"])
    with pytest.raises(ClientError) as e:
        put(boto_once.ebs, snapshot_id, 0, block_of(1))
    assert error_of(e) == ("ThrottlingException", 429)
    boto_once.peer.clear_faults()
    boto_once.ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=0)
    stats = boto_once.peer.stats()
    assert stats["faults"]["throttled"] == 1
    assert "PutSnapshotBlock" not in stats["ebs"] and stats["ebs"]["CompleteSnapshot"] == 1


@pytest.mark.parametrize("service, call, expected", [
    ("s3", lambda boto_once: boto_once.s3.create_bucket(Bucket="b"), ("SlowDown", 503)),
    ("ec2", lambda boto_once: boto_once.ec2.describe_volumes(), ("RequestLimitExceeded", 503)),
])
def test_throttles_have_the_service_shape(boto_once, service, call, expected):
    boto_once.peer.faults(throttle_rate=1.0, services=[service])
    with pytest.raises(ClientError) as e:
        call(boto_once)
    assert error_of(e) == expected


def test_reset_is_a_connection_error_and_reaches_no_backend(boto_once):
    boto_once.peer.faults(reset_rate=1.0, services=["ebs"])
    with pytest.raises(BotoCoreError) as e:
        boto_once.ebs.start_snapshot(VolumeSize=1)
    connection_errors = (ConnectionClosedError, EndpointConnectionError, ReadTimeoutError)
    assert isinstance(e.value, connection_errors), e.value
    boto_once.peer.clear_faults()
    assert boto_once.peer.stats()["faults"]["reset"] == 1
    direct = [{"Name": "volume-id", "Values": ["vol-ffffffff"]}]
    assert boto_once.ec2.describe_snapshots(Filters=direct)["Snapshots"] == []


def test_latency_does_not_serialize_requests(boto_once):
    boto_once.peer.faults(latency_ms=400, services=["ec2"])
    threads = [threading.Thread(target=boto_once.ec2.describe_volumes) for _ in range(4)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 0.4 <= time.monotonic() - started < 1.2


def test_moto_reset_clears_contents_faults_and_counters(boto_once):
    volume_id = new_volume(boto_once)
    boto_once.peer.write_volume(volume_id, 0, b"x")
    boto_once.peer.faults(throttle_rate=1.0, services=["s3"])
    boto_once.peer.reset()
    no_faults = {"throttled": 0, "reset": 0}
    assert boto_once.peer.stats() == {"ebs": {}, "s3": {}, "ec2": {}, "faults": no_faults,
                                      "max_attempts": {}}
    boto_once.s3.create_bucket(Bucket="after-reset")
    assert boto_once.ec2.describe_volumes()["Volumes"] == []
