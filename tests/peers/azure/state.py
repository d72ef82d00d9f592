"""Everything the peer remembers, behind one lock: ARM resources (as the JSON ARM shows),
the managed blobs behind disks and snapshots with their change journals, SAS grants,
bearer tokens, long-running operations, counters and faults. `reset()` forgets it all and
empties Azurite of managed blobs."""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.peers.azure.accounts import Principal
from tests.peers.azure.blobs import BlobStore
from tests.peers.azure.faults import Faults
from tests.peers.azure.pages import Journal

# ARM's documented limits per subscription and hour, counted down in the
# x-ms-ratelimit-remaining-subscription-* headers of every answer.
READ_LIMIT, WRITE_LIMIT = 12000, 1200


@dataclass
class Managed:
    """The page blob behind a disk or a snapshot, with its change journal."""
    container: str
    kind: str            # "disk" or "snapshot"
    resource_id: str
    name: str
    journal: Journal
    lineage: str         # the uniqueId of the disk whose data this is (diffs need equal ones)
    seq: int = 0         # a snapshot: the clock when it was taken
    incremental: bool = False
    # Held across a forwarded write and its journal entry, and across a snapshot's copy
    # and freeze, so a snapshot's journal is exactly its data.
    io_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


@dataclass
class Grant:
    """One beginGetAccess: the SAS's signed identifier (si) names it."""
    si: str
    container: str
    access: str          # "Read" or "Write"
    expires: float       # time.time()
    revoked: bool = False

    def state(self, now: float) -> str:
        return "revoked" if self.revoked else "expired" if now >= self.expires else "valid"


@dataclass
class Operation:
    """A long-running operation: done when `due` has passed; `result` is what its
    Location answers (None: 204-less empty 200); `finish` runs once when it is done."""
    id: str
    due: float
    resource_id: str
    result: Any = None
    finish: Callable[[], None] | None = None
    error: dict[str, Any] | None = None
    started: float = field(default_factory=time.time)
    done: bool = False


class PeerState:
    def __init__(self, blobs: BlobStore):
        # Lock order: `lock` (ARM state) before a Managed's io_lock; `stats_lock` last and
        # alone (the front counts while it holds an io_lock).
        self.lock = threading.RLock()
        self.stats_lock = threading.Lock()
        self.blobs = blobs
        self.faults = Faults()
        self.sas_key = secrets.token_bytes(32)
        self.storage_endpoint = ""  # the front's blob endpoint; set once it listens
        self.arm_endpoint = ""
        self.resources: dict[str, dict[str, Any]] = {}
        self.managed: dict[str, Managed] = {}
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.blobs.delete_all()
            self.resources.clear()  # keys: lower-case ids (ARM ids are case-insensitive)
            self.managed.clear()  # container -> Managed
            self.grants: dict[str, Grant] = {}
            self.tokens: dict[str, tuple[Principal, float]] = {}
            self.operations: dict[str, Operation] = {}
            self.vm_provisioning_delay = 0.0
            self.reads_used = self.writes_used = 0
            self.faults.configure({}, {}, 0)
            self.reset_stats()

    def reset_stats(self) -> None:
        with self.stats_lock:
            self.blob_stats: dict[str, Counter[str]] = defaultdict(Counter)
            self.arm_calls: Counter[str] = Counter()
            self.throttled = 0

    # -- tokens

    def issue_token(self, principal: Principal, lifetime: int) -> str:
        token = "peer." + secrets.token_urlsafe(24)
        with self.lock:
            self.tokens[token] = (principal, time.time() + lifetime)
        return token

    def principal(self, token: str) -> Principal | None:
        with self.lock:
            entry = self.tokens.get(token)
        if entry is None or entry[1] <= time.time():
            return None
        return entry[0]

    # -- operations

    def start_operation(self, resource_id: str, *, delay: float = 0.0, result: Any = None,
                        finish: Callable[[], None] | None = None) -> Operation:
        op = Operation(str(uuid.uuid4()), time.monotonic() + delay, resource_id, result, finish)
        with self.lock:
            self.operations[op.id] = op
        if delay <= 0:
            self.settle()
        return op

    def settle(self) -> None:
        """Finishes the operations whose time has come: state moves on when someone looks,
        which is all a client can tell apart from moving on by itself."""
        now = time.monotonic()
        with self.lock:
            for op in self.operations.values():
                if not op.done and op.due <= now:
                    op.done = True
                    if op.finish:
                        op.finish()

    # -- lookups

    def resource(self, resource_id: str) -> dict[str, Any] | None:
        with self.lock:
            return self.resources.get(resource_id.lower())

    def managed_of(self, resource_id: str) -> Managed | None:
        with self.lock:
            for m in self.managed.values():
                if m.resource_id.lower() == resource_id.lower():
                    return m
        return None

    def managed_by_name(self, name: str, kind: str | None = None) -> Managed:
        with self.lock:
            found = [m for m in self.managed.values()
                     if m.name.lower() == name.lower() and kind in (None, m.kind)]
        if len(found) != 1:
            raise KeyError(f"{len(found)} managed {kind or 'disk or snapshot'} named {name!r}")
        return found[0]

    def count_blob(self, container: str, **counts: int) -> None:
        m = self.managed.get(container)  # one dict read: no ARM lock (see the lock order)
        key = m.name if m else container
        with self.stats_lock:
            self.blob_stats[key].update(counts)

    def count_arm(self, operation: str, throttled: bool = False) -> None:
        with self.stats_lock:
            self.arm_calls[operation] += 1
            self.throttled += throttled
