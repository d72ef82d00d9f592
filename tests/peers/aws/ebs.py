"""The EBS direct APIs of the AWS peer, written from the API reference (moto's own EBS
backend is not used): StartSnapshot, PutSnapshotBlock, CompleteSnapshot,
GetSnapshotBlock, ListSnapshotBlocks and ListChangedBlocks, with their checks, paging,
expiring block tokens and error shapes. Snapshots are moto's EC2 `Snapshot` objects, so
EC2 sees what these APIs write."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from tests.peers.aws.blocks import BLOCK_SIZE, LOCK, Block, block_count, blocks_of, blocks_put
from tests.peers.aws.state import STATE
from tests.peers.aws.wire import EbsError, Response, invalid, json_response, not_found

MAX_VOLUME_GIB = 65536
_SECRET = secrets.token_bytes(32)  # signs block and page tokens so forged ones fail


# -- signed opaque tokens (block tokens and page tokens)


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

# -- the API's operations


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

