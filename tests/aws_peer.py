"""The AWS test peer: moto's server, corrected to AWS's documented EBS semantics, with
EBS volumes that hold real block content, request counters and fault injection.

Run it as `python -m tests.aws_peer --host 127.0.0.1 --port N`; it is ready when
`GET /moto-api/data.json` answers.

What differs from plain moto 5.2.5 (see PEERS.md, "AWS — moto server"):

* The EBS direct APIs are served here, not by moto's EBS backend, following the API
  reference: 512 KiB blocks, checked `DataLength` and SHA256 checksums, block index bounds,
  `ParentSnapshotId` inheritance, `pending` until `CompleteSnapshot` (which checks
  `ChangedBlocksCount` and the LINEAR aggregate checksum), paginated `ListSnapshotBlocks` /
  `ListChangedBlocks`, expiring block tokens, and AWS's JSON error shape (404
  `ResourceNotFoundException` for an unknown snapshot). Snapshot state lives on moto's
  EC2 `Snapshot` objects, so EC2 `DescribeSnapshots` agrees and `/moto-api/reset` clears it.
* Reads (`ListSnapshotBlocks`, `ListChangedBlocks`, `GetSnapshotBlock`) need a completed
  snapshot: a pending one gives `ValidationException` (the reference lists the read APIs
  only for completed snapshots; the snapshot is not readable before completion).
* `CompleteSnapshot` on an already completed snapshot answers `completed` again, so a
  client retrying after a lost response does not fail.
* The reference's `ValidationExceptionReason` has no checksum or data-length member, so
  those failures use `INVALID_PARAMETER_VALUE` with a message naming the field.
* EC2 volumes carry a sparse map of 512 KiB blocks, written over `/_peer/volumes/...`;
  `CreateSnapshot`, `CreateSnapshots` and `CopySnapshot` capture it, `CreateVolume` (and so
  `RunInstances` from an AMI) restores it from the snapshot.
* Faults (throttles in each service's real shape, connection resets, latency) are injected
  by a WSGI middleware in front of moto, configured over `/_peer/faults`.

Peer endpoints (all under `/_peer/`, which no AWS API uses):
  POST   /_peer/reset                           faults, stats, token lifetime to defaults
  POST   /_peer/faults  (JSON)  DELETE /_peer/faults
  GET    /_peer/stats           POST /_peer/stats/reset
  POST   /_peer/volumes/{id}/write?offset=N     body = bytes
  POST   /_peer/volumes/{id}/discard?offset=N&length=M
  GET    /_peer/volumes/{id}/read?offset=N&length=M
  GET    /_peer/volumes/{id}/sha256             hex SHA256 of the whole raw image
`POST /moto-api/reset` also resets the peer's own state.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import io
import json
import os
import random
import re
import secrets
import socket
import struct
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

BLOCK_SIZE = 524288  # bytes; the only block size the EBS direct APIs use
GiB = 1 << 30
MAX_VOLUME_GIB = 65536
DEFAULT_TOKEN_LIFETIME = 600.0
MAX_PEER_READ = 64 << 20
ZERO_BLOCK = bytes(BLOCK_SIZE)
ZERO_RUN = bytes(16 * BLOCK_SIZE)  # hashing runs of absent blocks without allocating GiBs

# One lock for every change to block maps: the server is threaded, and a volume write is
# a read-modify-write of whole blocks.
LOCK = threading.RLock()
_SECRET = secrets.token_bytes(32)  # signs block and page tokens so forged ones fail

Response = tuple[int, dict[str, str], bytes]


# ---------------------------------------------------------------------------------------
# Blocks and the block maps kept on moto's EC2 objects


@dataclass(frozen=True, eq=False)
class Block:
    """One 512 KiB block. Identity is the block's version: a block written again is a
    new object, which is how ListChangedBlocks tells written blocks from inherited ones."""

    data: bytes
    digest: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", hashlib.sha256(self.data).digest())

    @property
    def checksum(self) -> str:
        return base64.b64encode(self.digest).decode()


def blocks_of(obj: Any) -> dict[int, Block]:
    """The block map of a moto Volume or Snapshot (created empty on first use)."""
    return obj.__dict__.setdefault("peer_blocks", {})


def blocks_put(snapshot: Any) -> dict[int, Block]:
    """Blocks written into a snapshot by PutSnapshotBlock (not the inherited ones)."""
    return snapshot.__dict__.setdefault("peer_put", {})


def block_count(size_gib: int) -> int:
    return size_gib * GiB // BLOCK_SIZE


# ---------------------------------------------------------------------------------------
# Errors in each service's wire shape


class EbsError(Exception):
    """An EBS direct API error, serialized as AWS's rest-json error."""

    def __init__(self, status: int, code: str, message: str, reason: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.reason = status, code, message, reason

    def response(self) -> Response:
        body: dict[str, str] = {"message": self.message}
        if self.reason:
            body["Reason"] = self.reason
        return json_response(self.status, body, {"x-amzn-ErrorType": self.code})


def invalid(message: str, reason: str = "INVALID_PARAMETER_VALUE") -> EbsError:
    return EbsError(400, "ValidationException", message, reason)


def not_found(snapshot_id: str) -> EbsError:
    return EbsError(404, "ResourceNotFoundException",
                    f"The snapshot '{snapshot_id}' does not exist.", "SNAPSHOT_NOT_FOUND")


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    headers = {"Content-Type": "application/json", **(headers or {})}
    return status, headers, json.dumps(body).encode()


def request_id() -> str:
    return str(uuid.uuid4())


def throttle_response(service: str) -> Response:
    if service == "ebs":
        return EbsError(429, "ThrottlingException", "Rate exceeded").response()
    if service == "s3":
        body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>"
                "<Message>Please reduce your request rate.</Message>"
                f"<RequestId>{request_id()}</RequestId><HostId>peer</HostId></Error>")
        return 503, {"Content-Type": "application/xml"}, body.encode()
    body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>"
            "<Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>"
            f"</Error></Errors><RequestID>{request_id()}</RequestID></Response>")
    return 503, {"Content-Type": "text/xml"}, body.encode()


# ---------------------------------------------------------------------------------------
# Signed opaque tokens (block tokens and page tokens)


def sign(payload: list[Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    mac = hmac.new(_SECRET, raw, hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(mac + raw).decode()


def unsign(token: str | None) -> list[Any] | None:
    try:
        raw = base64.urlsafe_b64decode((token or "").encode())
        mac, payload = raw[:12], raw[12:]
        if hmac.compare_digest(mac, hmac.new(_SECRET, payload, hashlib.sha256).digest()[:12]):
            return json.loads(payload)
    except (ValueError, TypeError):
        pass
    return None


# ---------------------------------------------------------------------------------------
# Peer state: faults, counters, token lifetime


@dataclass
class Faults:
    throttle_rate: float = 0.0
    reset_rate: float = 0.0
    latency_ms: float = 0.0
    services: list[str] = field(default_factory=list)  # empty: every service
    operations: list[str] = field(default_factory=list)  # empty: every operation
    token_lifetime_seconds: float = DEFAULT_TOKEN_LIFETIME
    seed: int | None = None

    def applies(self, service: str, operation: str) -> bool:
        return ((not self.services or service in self.services)
                and (not self.operations or operation in self.operations))


class PeerState:
    """Everything the peer keeps besides moto's models; reset with them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.set_faults(Faults())
        self.reset_stats()

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults
        self.rng = random.Random(faults.seed)

    def reset_stats(self) -> None:
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.injected: Counter[str] = Counter({"throttled": 0, "reset": 0})
        # Attempts per request target ("s3 PutObject /bucket/key"), faulted ones included:
        # how often a client sent the same request.
        self.attempts: Counter[str] = Counter()

    def draw(self) -> float:
        with self.lock:
            return self.rng.random()

    def count(self, service: str, operation: str) -> None:
        with self.lock:
            self.counts[service][operation] += 1

    def count_attempt(self, service: str, operation: str, path: str) -> None:
        with self.lock:
            self.attempts[f"{service} {operation} {path}"] += 1

    def count_fault(self, kind: str) -> None:
        with self.lock:
            self.injected[kind] += 1

    def stats(self) -> dict[str, dict[str, int]]:
        with self.lock:
            out = {svc: dict(c) for svc, c in self.counts.items()}
            for svc in ("ebs", "s3", "ec2"):
                out.setdefault(svc, {})
            out["faults"] = dict(self.injected)
            most: dict[str, int] = {}
            for key, n in self.attempts.items():
                op = key.rsplit(" ", 1)[0]
                most[op] = max(most.get(op, 0), n)
            out["max_attempts"] = most  # "s3 PutObject" -> the most tries of one request
            return out


STATE = PeerState()


# ---------------------------------------------------------------------------------------
# moto lookups


def ec2_backend(account: str, region: str) -> Any:
    from moto.ec2.models import ec2_backends
    return ec2_backends[account][region]


def loaded_ec2_backends() -> Iterable[Any]:
    from moto.ec2.models import ec2_backends
    for regions in list(dict.values(ec2_backends)):
        yield from list(dict.values(regions))


def find_volume(volume_id: str) -> Any | None:
    for backend in loaded_ec2_backends():
        if volume_id in backend.volumes:
            return backend.volumes[volume_id]
    return None


def account_of(headers: Any, access_key: str) -> str:
    from moto.iam.models import get_account_id_from
    return (os.environ.get("MOTO_ACCOUNT_ID") or headers.get("x-moto-account-id")
            or get_account_id_from(access_key))


# ---------------------------------------------------------------------------------------
# EC2 patches: snapshots capture a volume's blocks, volumes restore a snapshot's


def patch_ec2() -> None:
    from moto.ec2.models.elastic_block_store import EBSBackend, Snapshot

    def wrap(name: str, after: Callable[..., None]) -> None:
        original = getattr(EBSBackend, name)

        def patched(self: Any, *args: Any, **kwargs: Any) -> Any:
            with LOCK:
                result = original(self, *args, **kwargs)
                after(self, result, *args, **kwargs)
                return result
        setattr(EBSBackend, name, patched)

    def capture(backend: Any, snapshot: Any, *args: Any, **kwargs: Any) -> None:
        blocks_of(snapshot).update(blocks_of(snapshot.volume))

    def restore(backend: Any, volume: Any, *args: Any, **kwargs: Any) -> None:
        if volume.snapshot_id:
            blocks_of(volume).update(blocks_of(backend.get_snapshot(volume.snapshot_id)))

    def copy(backend: Any, snapshot: Any, source_snapshot_id: str, source_region: str,
             *args: Any, **kwargs: Any) -> None:
        source = ec2_backend(backend.account_id, source_region).get_snapshot(source_snapshot_id)
        blocks_of(snapshot).update(blocks_of(source))

    # create_snapshots goes through create_snapshot, RunInstances through create_volume.
    wrap("create_snapshot", capture)
    wrap("create_volume", restore)
    wrap("copy_snapshot", copy)
    Snapshot.progress = property(lambda s: "100%" if s.status == "completed" else "0%")


def patch_images() -> None:
    """RegisterImage keeps its block-device mappings (moto drops them and makes its own
    15 GiB root), RunInstances makes volumes from the AMI's snapshots, honours ClientToken
    idempotency and tags ENIs, and a private IP in use is InvalidIPAddress.InUse (moto:
    HTTP 500): what AWS does for EBS-backed images."""
    import copy

    from moto.core.responses import ActionResult
    from moto.ec2.models.amis import Ami
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.instances import InstanceBackend
    from moto.ec2.models.subnets import Subnet
    from moto.ec2.responses.amis import AmisResponse

    def register_image(self: Any) -> ActionResult:
        self.error_on_dryrun()
        image = self.ec2_backend.register_image(self._get_param("Name"),
                                                self._get_param("Description", ""))
        mappings = self._get_param("BlockDeviceMappings", [])
        if mappings:
            image.registered_mappings = mappings
            image.root_device_type = "ebs"
        image.root_device_name = self._get_param("RootDeviceName") or image.root_device_name
        image.virtualization_type = self._get_param("VirtualizationType") or "paravirtual"
        image.architecture = self._get_param("Architecture") or "x86_64"
        image.add_tags(self._parse_tag_specification().get("image", {}))
        return ActionResult({"ImageId": image.id})

    moto_mappings = Ami.block_device_mappings

    def block_device_mappings(self: Any) -> list[dict[str, Any]]:
        return getattr(self, "registered_mappings", None) or moto_mappings.fget(self)

    moto_run = InstanceBackend.run_instances

    def run_instances(self: Any, image_id: str, count: int, user_data: Any,
                      security_group_names: Any, **kwargs: Any) -> Any:
        token = kwargs.get("client_token")
        for reservation in self.reservations.values():
            if token and any(i.client_token == token for i in reservation.instances):
                return reservation  # AWS: a repeated token returns the first launch
        image = self.amis.get(image_id)
        if "block_device_mappings" not in kwargs and getattr(image, "registered_mappings", None):
            kwargs["block_device_mappings"] = copy.deepcopy(image.registered_mappings)
        nic_tags = kwargs.get("tags", {}).get("network-interface", {})
        reservation = moto_run(self, image_id, count, user_data, security_group_names, **kwargs)
        for instance in reservation.instances:
            for nic in instance.nics.values():
                nic.add_tags(nic_tags)
        return reservation

    moto_request_ip = Subnet.request_ip

    def request_ip(self: Any, ip: str, instance: Any) -> None:
        if ip in self._subnet_ips:
            raise EC2ClientError("InvalidIPAddress.InUse", f"Address {ip} is in use.")
        moto_request_ip(self, ip, instance)

    AmisResponse.register_image = register_image
    Subnet.request_ip = request_ip
    Ami.block_device_mappings = property(block_device_mappings)
    InstanceBackend.run_instances = run_instances


# ---------------------------------------------------------------------------------------
# The EBS direct APIs


@dataclass
class EbsRequest:
    method: str
    path_args: dict[str, str]
    query: dict[str, str]
    headers: Any
    body: bytes
    backend: Any  # moto's EC2 backend of the caller's account and region


def get_snapshot(req: EbsRequest, snapshot_id: str | None) -> Any:
    snapshot = req.backend.snapshots.get(snapshot_id or "")
    if snapshot is None:
        raise not_found(snapshot_id or "")
    return snapshot


def readable_snapshot(req: EbsRequest, snapshot_id: str | None) -> Any:
    snapshot = get_snapshot(req, snapshot_id)
    if snapshot.status != "completed":
        raise invalid(f"The snapshot '{snapshot.id}' is not completed.", "INVALID_SNAPSHOT_ID")
    return snapshot


def int_param(value: str | None, name: str, default: int | None = None) -> int:
    if value is None or value == "":
        if default is None:
            raise invalid(f"{name} is required.")
        return default
    try:
        return int(value)
    except ValueError:
        raise invalid(f"{name} must be an integer.") from None


def check_block_index(snapshot: Any, index: int) -> None:
    if not 0 <= index < block_count(snapshot.volume.size):
        raise invalid(f"Block index {index} is out of range for a "
                      f"{snapshot.volume.size} GiB volume.", "INVALID_BLOCK")


def start_snapshot(req: EbsRequest) -> Response:
    params = json.loads(req.body or b"{}")
    size = int_param(str(params.get("VolumeSize", "")), "VolumeSize")
    if not 1 <= size <= MAX_VOLUME_GIB:
        raise invalid(f"VolumeSize {size} is out of range.", "INVALID_VOLUME_SIZE")
    token = params.get("ClientToken")
    tokens = req.backend.__dict__.setdefault("peer_client_tokens", {})
    if token and token in tokens:
        previous_params, snapshot_id = tokens[token]
        if previous_params != params:
            raise EbsError(409, "ConflictException",
                           "The client token was used with different parameters.")
        return json_response(201, snapshot_description(req.backend.snapshots[snapshot_id]))
    parent = parent_snapshot(req, params, size)
    snapshot = new_pending_snapshot(req.backend, size, params.get("Description") or "")
    if params.get("Tags"):
        snapshot.add_tags({t["Key"]: t["Value"] for t in params["Tags"]})
    if parent is not None:
        blocks_of(snapshot).update(blocks_of(parent))  # copy-on-write: the blocks are shared
        snapshot.peer_parent = parent.id
    if token:
        tokens[token] = (params, snapshot.id)
    return json_response(201, snapshot_description(snapshot))


def parent_snapshot(req: EbsRequest, params: dict[str, Any], size: int) -> Any | None:
    parent_id = params.get("ParentSnapshotId")
    if not parent_id:
        return None
    if params.get("Encrypted"):
        raise invalid("ParentSnapshotId and Encrypted can't be used together.")
    parent = readable_snapshot(req, parent_id)
    if size < parent.volume.size:
        raise invalid(f"VolumeSize {size} is smaller than the parent's "
                      f"{parent.volume.size} GiB.", "INVALID_VOLUME_SIZE")
    return parent


def new_pending_snapshot(backend: Any, size: int, description: str) -> Any:
    """An EC2 snapshot with no source volume. moto's own start_snapshot created a real
    volume, which then showed in DescribeVolumes; AWS shows vol-ffffffff for these."""
    from moto.ec2.models.elastic_block_store import Snapshot, Volume
    from moto.ec2.utils import random_snapshot_id
    zone = backend.get_zone_by_name(f"{backend.region_name}a")
    ghost = Volume(backend, "vol-ffffffff", size, zone)
    snapshot = Snapshot(backend, random_snapshot_id(), volume=ghost, description=description)
    snapshot.status = "pending"
    backend.snapshots[snapshot.id] = snapshot
    return snapshot


def snapshot_description(snapshot: Any) -> dict[str, Any]:
    out = {
        "SnapshotId": snapshot.id, "OwnerId": snapshot.owner_id, "Status": snapshot.status,
        "StartTime": snapshot.start_time.timestamp(), "VolumeSize": snapshot.volume.size,
        "BlockSize": BLOCK_SIZE, "Description": snapshot.description,
        "Tags": [{"Key": t["key"], "Value": t["value"]} for t in snapshot.get_tags()],
    }
    if getattr(snapshot, "peer_parent", None):
        out["ParentSnapshotId"] = snapshot.peer_parent
    return out


def put_snapshot_block(req: EbsRequest) -> Response:
    snapshot = get_snapshot(req, req.path_args["snapshot"])
    if snapshot.status != "pending":
        raise invalid(f"The snapshot '{snapshot.id}' is not pending.", "INVALID_SNAPSHOT_ID")
    index = int_param(req.path_args["index"], "BlockIndex")
    check_block_index(snapshot, index)
    block = Block(check_block_data(req))
    with LOCK:
        blocks_of(snapshot)[index] = block
        blocks_put(snapshot)[index] = block
    return 201, {"x-amz-Checksum": block.checksum, "x-amz-Checksum-Algorithm": "SHA256"}, b""


def check_block_data(req: EbsRequest) -> bytes:
    length = int_param(req.headers.get("x-amz-Data-Length"), "DataLength")
    if length != BLOCK_SIZE:
        raise invalid(f"DataLength must be {BLOCK_SIZE}, not {length}.")
    if len(req.body) != length:
        raise invalid(f"The body has {len(req.body)} bytes but DataLength is {length}.")
    if req.headers.get("x-amz-Checksum-Algorithm") != "SHA256":
        raise invalid("ChecksumAlgorithm must be SHA256.")
    actual = base64.b64encode(hashlib.sha256(req.body).digest()).decode()
    if req.headers.get("x-amz-Checksum") != actual:
        raise invalid("The Checksum does not match the block data.")
    return req.body


def complete_snapshot(req: EbsRequest) -> Response:
    snapshot = get_snapshot(req, req.path_args["snapshot"])
    if snapshot.status == "completed":
        return json_response(202, {"Status": "completed"})
    with LOCK:
        put = dict(blocks_put(snapshot))
        count = int_param(req.headers.get("x-amz-ChangedBlocksCount"), "ChangedBlocksCount")
        if count != len(put):
            raise invalid(f"ChangedBlocksCount is {count} but {len(put)} blocks were written.")
        check_aggregate_checksum(req, put)
        snapshot.status = "completed"
    return json_response(202, {"Status": "completed"})


def check_aggregate_checksum(req: EbsRequest, put: dict[int, Block]) -> None:
    checksum = req.headers.get("x-amz-Checksum")
    if not checksum:
        return
    if req.headers.get("x-amz-Checksum-Algorithm") != "SHA256":
        raise invalid("ChecksumAlgorithm must be SHA256.")
    if req.headers.get("x-amz-Checksum-Aggregation-Method") != "LINEAR":
        raise invalid("ChecksumAggregationMethod must be LINEAR.")
    linear = hashlib.sha256(b"".join(put[i].digest for i in sorted(put))).digest()
    if checksum != base64.b64encode(linear).decode():
        raise invalid("The aggregated Checksum does not match the written blocks.")


def block_token(snapshot_id: str, index: int, expiry: float) -> str:
    return sign(["b", snapshot_id, index, expiry])


def get_snapshot_block(req: EbsRequest) -> Response:
    snapshot = readable_snapshot(req, req.path_args["snapshot"])
    index = int_param(req.path_args["index"], "BlockIndex")
    check_block_index(snapshot, index)
    token = unsign(req.query.get("blockToken"))
    block = blocks_of(snapshot).get(index)
    if (token is None or token[:3] != ["b", snapshot.id, index] or token[3] < time.time()
            or block is None):
        raise invalid("The block token is not valid or has expired.", "INVALID_BLOCK_TOKEN")
    return 200, {"x-amz-Data-Length": str(len(block.data)), "x-amz-Checksum": block.checksum,
                 "x-amz-Checksum-Algorithm": "SHA256",
                 "Content-Type": "application/octet-stream"}, block.data


def page_window(req: EbsRequest, key: list[str]) -> tuple[int, int]:
    """(first block index, MaxResults) for a List* call; NextToken overrides
    StartingBlockIndex and is bound to the snapshots it was issued for."""
    limit = int_param(req.query.get("maxResults"), "MaxResults", 10000)
    if not 100 <= limit <= 10000:
        raise invalid(f"MaxResults must be between 100 and 10000, not {limit}.")
    if "pageToken" in req.query:
        token = unsign(req.query["pageToken"])
        if token is None or token[:-1] != ["p", *key]:
            raise invalid("The NextToken is not valid.", "INVALID_PAGE_TOKEN")
        return token[-1], limit
    return max(0, int_param(req.query.get("startingBlockIndex"), "StartingBlockIndex", 0)), limit


def list_page(req: EbsRequest, key: list[str],
              indices: Iterable[int]) -> tuple[list[int], dict[str, Any]]:
    """The block indices of this page and the page's common response fields."""
    start, limit = page_window(req, key)
    chosen = sorted(i for i in indices if i >= start)
    extra: dict[str, Any] = {"ExpiryTime": time.time() + STATE.faults.token_lifetime_seconds,
                             "BlockSize": BLOCK_SIZE}
    if len(chosen) > limit:
        extra["NextToken"] = sign(["p", *key, chosen[limit]])
    return chosen[:limit], extra


def list_snapshot_blocks(req: EbsRequest) -> Response:
    snapshot = readable_snapshot(req, req.path_args["snapshot"])
    blocks = blocks_of(snapshot)
    page, extra = list_page(req, [snapshot.id], blocks)
    expiry = extra["ExpiryTime"]
    return json_response(200, {
        "Blocks": [{"BlockIndex": i, "BlockToken": block_token(snapshot.id, i, expiry)}
                   for i in page],
        "VolumeSize": snapshot.volume.size, **extra})


def list_changed_blocks(req: EbsRequest) -> Response:
    second = readable_snapshot(req, req.path_args["snapshot"])
    first_id = req.query.get("firstSnapshotId")
    first = readable_snapshot(req, first_id) if first_id else None
    a, b = (blocks_of(first) if first else {}), blocks_of(second)
    # A block changed if it is in only one snapshot, or was written again in between.
    changed = {i for i in a.keys() | b.keys() if a.get(i) is not b.get(i)}
    page, extra = list_page(req, [first_id or "", second.id], changed)
    expiry = extra["ExpiryTime"]
    entries = []
    for i in page:
        entry: dict[str, Any] = {"BlockIndex": i}
        if i in a:
            entry["FirstBlockToken"] = block_token(first.id, i, expiry)  # type: ignore[union-attr]
        if i in b:
            entry["SecondBlockToken"] = block_token(second.id, i, expiry)
        entries.append(entry)
    return json_response(200, {"ChangedBlocks": entries, "VolumeSize": second.volume.size, **extra})


SNAPSHOT = r"/snapshots/(?P<snapshot>[^/]+)"
EbsHandler = Callable[[EbsRequest], Response]
EBS_ROUTES: list[tuple[str, re.Pattern[str], str, EbsHandler]] = [
    (method, re.compile(pattern), name, handler) for method, pattern, name, handler in [
        ("POST", r"/snapshots$", "StartSnapshot", start_snapshot),
        ("POST", r"/snapshots/completion/(?P<snapshot>[^/]+)$", "CompleteSnapshot",
         complete_snapshot),
        ("PUT", SNAPSHOT + r"/blocks/(?P<index>[^/]+)$", "PutSnapshotBlock", put_snapshot_block),
        ("GET", SNAPSHOT + r"/blocks/(?P<index>[^/]+)$", "GetSnapshotBlock", get_snapshot_block),
        ("GET", SNAPSHOT + r"/blocks$", "ListSnapshotBlocks", list_snapshot_blocks),
        ("GET", SNAPSHOT + r"/changedblocks$", "ListChangedBlocks", list_changed_blocks),
    ]
]


def ebs_route(method: str, path: str) -> tuple[str, EbsHandler | None, dict[str, str]]:
    for m, pattern, name, handler in EBS_ROUTES:
        match = pattern.match(path)
        if m == method and match:
            return name, handler, match.groupdict()
    return f"{method} {path}", None, {}


# ---------------------------------------------------------------------------------------
# Volume content endpoints


def write_volume(volume: Any, offset: int, data: bytes) -> None:
    check_range(volume, offset, len(data))
    blocks = blocks_of(volume)
    pos = 0
    while pos < len(data):
        index, within = divmod(offset + pos, BLOCK_SIZE)
        n = min(BLOCK_SIZE - within, len(data) - pos)
        old = blocks[index].data if index in blocks else ZERO_BLOCK
        blocks[index] = Block(old[:within] + data[pos:pos + n] + old[within + n:])
        pos += n


def discard_volume(volume: Any, offset: int, length: int) -> None:
    """Whole blocks in the range become unallocated; partial ones are zeroed."""
    check_range(volume, offset, length)
    blocks = blocks_of(volume)
    end = offset + length
    for index in range(offset // BLOCK_SIZE, -(-end // BLOCK_SIZE)):
        lo, hi = max(offset, index * BLOCK_SIZE), min(end, (index + 1) * BLOCK_SIZE)
        if hi - lo == BLOCK_SIZE:
            blocks.pop(index, None)
        elif index in blocks:
            write_volume(volume, lo, bytes(hi - lo))


def read_volume(volume: Any, offset: int, length: int) -> bytes:
    check_range(volume, offset, length)
    blocks = blocks_of(volume)
    out = bytearray()
    while len(out) < length:
        index, within = divmod(offset + len(out), BLOCK_SIZE)
        n = min(BLOCK_SIZE - within, length - len(out))
        data = blocks[index].data if index in blocks else ZERO_BLOCK
        out += data[within:within + n]
    return bytes(out)


def volume_sha256(volume: Any) -> str:
    blocks = dict(blocks_of(volume))
    h = hashlib.sha256()
    zeros = 0  # absent blocks are hashed in runs from one shared zero buffer

    def flush() -> None:
        nonlocal zeros
        while zeros:
            n = min(zeros, len(ZERO_RUN) // BLOCK_SIZE)
            h.update(memoryview(ZERO_RUN)[:n * BLOCK_SIZE])
            zeros -= n

    for index in range(block_count(volume.size)):
        if index in blocks:
            flush()
            h.update(blocks[index].data)
        else:
            zeros += 1
    flush()
    return h.hexdigest()


def check_range(volume: Any, offset: int, length: int) -> None:
    if offset < 0 or length < 0 or offset + length > volume.size * GiB:
        raise PeerError(400, f"range {offset}+{length} is outside the {volume.size} GiB volume")


class PeerError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def peer_request(method: str, path: str, query: dict[str, str], body: bytes) -> Response:
    """The /_peer/ control endpoints."""
    if (method, path) == ("POST", "/_peer/reset"):
        STATE.reset()
    elif path == "/_peer/faults" and method in ("POST", "DELETE"):
        STATE.set_faults(Faults(**json.loads(body or b"{}")) if method == "POST" else Faults())
    elif (method, path) == ("GET", "/_peer/stats"):
        return json_response(200, STATE.stats())
    elif (method, path) == ("POST", "/_peer/stats/reset"):
        STATE.reset_stats()
    elif match := re.fullmatch(r"/_peer/volumes/([^/]+)/(write|discard|read|sha256)", path):
        return volume_request(method, match.group(1), match.group(2), query, body)
    else:
        raise PeerError(404, f"no peer endpoint {method} {path}")
    return json_response(200, {"ok": True})


def volume_request(method: str, volume_id: str, action: str, query: dict[str, str],
                   body: bytes) -> Response:
    volume = find_volume(volume_id)
    if volume is None:
        raise PeerError(404, f"no volume {volume_id}")
    offset, length = int(query.get("offset", 0)), int(query.get("length", 0))
    with LOCK:
        if (method, action) == ("POST", "write"):
            write_volume(volume, offset, body)
        elif (method, action) == ("POST", "discard"):
            discard_volume(volume, offset, length)
        elif (method, action) == ("GET", "read"):
            if length > MAX_PEER_READ:
                raise PeerError(400, f"reads are limited to {MAX_PEER_READ} bytes")
            data = read_volume(volume, offset, length)
            return 200, {"Content-Type": "application/octet-stream"}, data
        elif (method, action) == ("GET", "sha256"):
            return json_response(200, {"sha256": volume_sha256(volume)})
        else:
            raise PeerError(405, f"{method} not allowed on {action}")
    return json_response(200, {"ok": True})


# ---------------------------------------------------------------------------------------
# Request classification (service from SigV4, operation per protocol)

CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/]+/([^/]+)/([^/]+)/aws4_request")


def sigv4_scope(environ: dict[str, Any], query: dict[str, str]) -> tuple[str, str, str]:
    """(access key, region, service) from the Authorization header or a presigned URL."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    presigned = "Credential=" + query.get("X-Amz-Credential", "")
    match = CREDENTIAL.search(auth) or CREDENTIAL.search(presigned)
    return match.groups() if match else ("", "us-east-1", "")  # type: ignore[return-value]


S3_SUBRESOURCES = ["tagging", "versioning", "lifecycle", "policy", "acl", "cors", "location",
                   "encryption", "object-lock", "retention", "legal-hold", "notification"]


def s3_operation(method: str, path: str, query: dict[str, str], environ: dict[str, Any]) -> str:
    bucket, _, key = path.lstrip("/").partition("/")
    if not bucket:
        return "ListBuckets"
    sub = next((s for s in S3_SUBRESOURCES if s in query), "")
    target = "Object" if key else "Bucket"
    if sub:
        verb = {"GET": "Get", "PUT": "Put", "DELETE": "Delete"}.get(method, method)
        return f"{verb}{target}{sub.title().replace('-', '')}"
    if key and "uploadId" in query:
        copy = "Copy" if "HTTP_X_AMZ_COPY_SOURCE" in environ else ""
        return {"PUT": f"UploadPart{copy}", "POST": "CompleteMultipartUpload",
                "DELETE": "AbortMultipartUpload", "GET": "ListParts"}.get(method, method)
    if "uploads" in query:
        return "CreateMultipartUpload" if key else "ListMultipartUploads"
    if key:
        put = "CopyObject" if "HTTP_X_AMZ_COPY_SOURCE" in environ else "PutObject"
        return {"PUT": put, "GET": "GetObject", "HEAD": "HeadObject",
                "DELETE": "DeleteObject", "POST": "PostObject"}.get(method, method)
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    if method == "GET":
        return ("ListObjectsV2" if query.get("list-type") == "2"
                else "ListObjectVersions" if "versions" in query else "ListObjects")
    bucket_ops = {"PUT": "CreateBucket", "HEAD": "HeadBucket", "DELETE": "DeleteBucket"}
    return bucket_ops.get(method, method)


def ec2_operation(environ: dict[str, Any], query: dict[str, str]) -> str:
    """EC2's Action is in the query or the form body; the body is read here and put back
    for moto."""
    if "Action" in query:
        return query["Action"]
    body = read_body(environ)
    environ["wsgi.input"] = io.BytesIO(body)
    form = parse_qs(body.decode("utf-8", "replace"))
    return form.get("Action", ["Unknown"])[0]


def read_body(environ: dict[str, Any]) -> bytes:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    return environ["wsgi.input"].read(length) if length else b""


def operation_of(service: str, environ: dict[str, Any], query: dict[str, str]) -> str:
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
    if service == "ebs":
        return ebs_route(method, path)[0]
    if service == "s3":
        return s3_operation(method, path, query, environ)
    if service == "ec2":
        return ec2_operation(environ, query)
    return f"{method} {path}"


# ---------------------------------------------------------------------------------------
# The WSGI middleware


class PeerApp:
    """Serves /_peer/ and the EBS direct APIs; injects faults; hands the rest to moto."""

    def __init__(self, moto_app: Callable[..., Any]):
        self.moto_app = moto_app

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        parsed = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        query = {k: v[-1] for k, v in parsed.items()}
        if path.startswith("/_peer/"):
            return self.respond(start_response, self.peer(environ, path, query))
        if path.startswith("/moto-api/"):
            if path == "/moto-api/reset":
                STATE.reset()
            return self.moto_app(environ, start_response)
        access_key, region, service = sigv4_scope(environ, query)
        operation = operation_of(service, environ, query)
        STATE.count_attempt(service or "other", operation, path)
        fault = self.inject(service, operation, environ)
        if fault == "reset":
            return self.drop_connection(environ, start_response)
        if fault == "throttled":
            return self.respond(start_response, throttle_response(service))
        STATE.count(service or "other", operation)
        if service == "ebs":
            return self.respond(start_response, self.ebs(environ, path, query, access_key, region))
        return self.moto_app(environ, start_response)

    def inject(self, service: str, operation: str, environ: dict[str, Any]) -> str | None:
        faults = STATE.faults
        if not faults.applies(service, operation):
            return None
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        for kind, rate in (("reset", faults.reset_rate), ("throttled", faults.throttle_rate)):
            if rate and STATE.draw() < rate:
                STATE.count_fault(kind)
                # Drained, or werkzeug reads the unread body as the next kept-alive request.
                read_body(environ)
                return kind
        return None

    @staticmethod
    def drop_connection(environ: dict[str, Any],
                        start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Close the client's socket without a response (RST where the OS allows it)."""
        sock = environ.get("werkzeug.socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        raise ConnectionAbortedError("peer fault: connection reset")

    @staticmethod
    def peer(environ: dict[str, Any], path: str, query: dict[str, str]) -> Response:
        try:
            return peer_request(environ["REQUEST_METHOD"], path, query, read_body(environ))
        except PeerError as e:
            return json_response(e.status, {"error": str(e)})
        except (TypeError, ValueError) as e:
            return json_response(400, {"error": str(e)})

    @staticmethod
    def ebs(environ: dict[str, Any], path: str, query: dict[str, str], access_key: str,
            region: str) -> Response:
        from werkzeug.wrappers import Request
        request = Request(environ)
        name, handler, args = ebs_route(environ["REQUEST_METHOD"], path)
        if handler is None:
            return EbsError(404, "UnknownOperationException", f"no EBS operation {name}").response()
        backend = ec2_backend(account_of(request.headers, access_key), region)
        req = EbsRequest(environ["REQUEST_METHOD"], args, query, request.headers,
                         request.get_data(), backend)
        try:
            return handler(req)
        except EbsError as e:
            return e.response()

    @staticmethod
    def respond(start_response: Callable[..., Any], response: Response) -> Iterable[bytes]:
        status, headers, body = response
        reason = {200: "OK", 201: "Created", 202: "Accepted", 400: "Bad Request",
                  404: "Not Found", 409: "Conflict", 429: "Too Many Requests",
                  503: "Service Unavailable"}.get(status, "Status")
        headers = {**headers, "Content-Length": str(len(body)), "x-amzn-RequestId": request_id()}
        start_response(f"{status} {reason}", list(headers.items()))
        return [body]


# ---------------------------------------------------------------------------------------
# The test side: start the peer as a process, and talk to its /_peer/ endpoints


class PeerStartError(RuntimeError):
    pass


class AwsPeerClient:
    """What tests get from the `aws_peer` fixture. Standard library only (urllib)."""

    region = "us-east-1"

    def __init__(self, endpoint: str):
        self.endpoint = endpoint

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing-secret", "AWS_DEFAULT_REGION": self.region}

    def _call(self, method: str, path: str, body: bytes | None = None, **query: int) -> bytes:
        import urllib.parse
        import urllib.request
        url = self.endpoint + path + ("?" + urllib.parse.urlencode(query) if query else "")
        request = urllib.request.Request(url, data=body, method=method)
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read()

    def reset(self) -> None:
        """All of moto's state and the peer's (faults, counters, volume contents)."""
        self._call("POST", "/moto-api/reset")
        self._call("POST", "/_peer/reset")

    def faults(self, **settings: Any) -> None:
        """throttle_rate, reset_rate, latency_ms, services, operations,
        token_lifetime_seconds, seed: see `Faults`."""
        self._call("POST", "/_peer/faults", json.dumps(settings).encode())

    def clear_faults(self) -> None:
        self._call("DELETE", "/_peer/faults")

    def stats(self) -> dict[str, dict[str, int]]:
        return json.loads(self._call("GET", "/_peer/stats"))

    def reset_stats(self) -> None:
        self._call("POST", "/_peer/stats/reset")

    def write_volume(self, volume_id: str, offset: int, data: bytes) -> None:
        self._call("POST", f"/_peer/volumes/{volume_id}/write", data, offset=offset)

    def discard_volume(self, volume_id: str, offset: int, length: int) -> None:
        self._call("POST", f"/_peer/volumes/{volume_id}/discard", b"", offset=offset, length=length)

    def read_volume(self, volume_id: str, offset: int, length: int) -> bytes:
        return self._call("GET", f"/_peer/volumes/{volume_id}/read", offset=offset, length=length)

    def volume_sha256(self, volume_id: str) -> str:
        return json.loads(self._call("GET", f"/_peer/volumes/{volume_id}/sha256"))["sha256"]


class PeerProcess:
    """`python -m tests.aws_peer` on a free loopback port, ready when data.json answers."""

    def __init__(self, log_path: Any, startup_timeout: float = 30.0):
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self.process: Any = None
        self.client: AwsPeerClient | None = None

    def start(self) -> AwsPeerClient:
        import subprocess
        import sys
        from pathlib import Path
        port = free_port()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.aws_peer",
                 "--host", "127.0.0.1", "--port", str(port)],
                cwd=Path(__file__).resolve().parent.parent, stdout=log, stderr=subprocess.STDOUT)
        self.client = AwsPeerClient(f"http://127.0.0.1:{port}")
        self.wait_ready()
        return self.client

    def wait_ready(self) -> None:
        import urllib.error
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                self.client._call("GET", "/moto-api/data.json")  # type: ignore[union-attr]
                return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)  # between polls; readiness is the answer, not the delay
        self.stop()
        raise PeerStartError(f"the AWS peer did not start; see {self.log_path}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except Exception:
                self.process.kill()
                self.process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------
# Server


def make_app() -> PeerApp:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    patch_ec2()
    patch_images()
    return PeerApp(DomainDispatcherApplication(create_backend_app))


def serve(host: str, port: int) -> None:
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import make_server
    # threaded: latency injected into one request must not hold up the others
    server = make_server(host, port, make_app(), threaded=True, request_handler=MotoRequestHandler)
    print(f"aws_peer listening on http://{host}:{server.server_address[1]}", flush=True)
    server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    serve(args.host, args.port)


if __name__ == "__main__":
    main()
