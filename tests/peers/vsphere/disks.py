"""Disk content as vSphere keeps it: a sparse base file, frozen while the VM has snapshots
(guest writes then go to delta layers), consolidated when snapshots are removed; and
changed-block tracking (CBT) with vSphere-shaped changeIds. No I/O here: the front owns the
locking and the wire.

Content is kept in 64 KiB blocks (CBT's granularity here, and the unit of allocation), so
memory is proportional to the data written. A block in a delta layer may be `None`: the
guest discarded it, which hides the layers below (reads give zeros, it is not allocated).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

BLOCK = 64 << 10
ZERO = bytes(BLOCK)
CHANGE_ID = re.compile(r"^((?:[0-9a-f]{2} ){7}[0-9a-f]{2}-(?:[0-9a-f]{2} ){7}[0-9a-f]{2})/(\d+)$")


class ChangeIdError(Exception):
    """The changeId cannot be answered: `malformed` (not a changeId at all) or unknown to
    this disk's tracking (another disk's, from before a CBT reset, or from the future)."""

    def __init__(self, message: str, malformed: bool = False):
        super().__init__(message)
        self.malformed = malformed


def new_tracking_uuid() -> str:
    """vSphere's shape: "52 xx xx xx xx xx xx xx-xx xx xx xx xx xx xx xx"."""
    b = bytearray(uuid.uuid4().bytes)
    b[0] = 0x52
    h = [f"{x:02x}" for x in b]
    return " ".join(h[:8]) + "-" + " ".join(h[8:])


@dataclass(eq=False)
class Layer:
    """One disk file: the base (`name` = the disk's descriptor path) or a delta."""
    name: str
    blocks: dict[int, bytes | None] = field(default_factory=dict)


@dataclass(eq=False)
class Disk:
    base: str  # datastore path of the base descriptor: "[LocalDS_0] dir/disk1.vmdk"
    capacity: int
    layers: list[Layer] = field(default_factory=list)
    frozen: dict[str, Layer] = field(default_factory=dict)  # snapshot ref -> the layer it froze
    snap_seq: dict[str, str] = field(default_factory=dict)  # snapshot ref -> its changeId
    tracking: str | None = None  # the tracking uuid while CBT is in effect
    pending: bool = False  # CBT enabled, not yet in effect (waits for a stun or power-on)
    seq: int = 0
    epochs: dict[int, set[int]] = field(default_factory=dict)  # seq -> blocks written after it
    deltas_made: int = 0

    def __post_init__(self) -> None:
        if not self.layers:
            self.layers = [Layer(self.base)]

    # -- names

    @property
    def current_file(self) -> str:
        return self.layers[-1].name

    def chain(self, layer: Layer | None = None) -> list[str]:
        """File names from `layer` (default: the running one) down to the base."""
        top = self.layers.index(layer) if layer else len(self.layers) - 1
        return [self.layers[i].name for i in range(top, -1, -1)]

    def files(self) -> list[str]:
        return [layer.name for layer in self.layers]

    # -- guest I/O on the running (top) layer

    def _block(self, index: int, top: int) -> bytes | None:
        for i in range(top, -1, -1):
            blocks = self.layers[i].blocks
            if index in blocks:
                return blocks[index]
        return None

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.capacity:
            raise ValueError(f"[{offset}, {offset + length}) is outside the disk "
                             f"({self.capacity} bytes)")

    def write(self, offset: int, data: bytes) -> None:
        self._check(offset, len(data))
        top = len(self.layers) - 1
        pos = 0
        while pos < len(data):
            index, inner = divmod(offset + pos, BLOCK)
            n = min(BLOCK - inner, len(data) - pos)
            if n == BLOCK:
                block = bytes(data[pos:pos + n])
            else:
                old = bytearray(self._block(index, top) or ZERO)
                old[inner:inner + n] = data[pos:pos + n]
                block = bytes(old)
            self.layers[top].blocks[index] = block
            self._track(index)
            pos += n

    def discard(self, offset: int, length: int) -> None:
        """Whole blocks become unallocated (zeros); partial ones are zero-filled."""
        self._check(offset, length)
        top = len(self.layers) - 1
        pos = offset
        while pos < offset + length:
            index, inner = divmod(pos, BLOCK)
            n = min(BLOCK - inner, offset + length - pos)
            if n == BLOCK:
                if top == 0:
                    self.layers[0].blocks.pop(index, None)
                else:
                    self.layers[top].blocks[index] = None
                self._track(index)
            else:
                self.write(pos, bytes(n))
            pos += n

    def read(self, offset: int, length: int, layer: Layer | None = None) -> bytes:
        """The content as seen through `layer` (default: the guest's current view)."""
        self._check(offset, length)
        return b"".join(self.iter_read(offset, length, layer))

    def iter_read(self, offset: int, length: int, layer: Layer | None = None,
                  ) -> Iterator[bytes]:
        top = self.layers.index(layer) if layer else len(self.layers) - 1
        end = min(offset + length, self.capacity)
        pos = offset
        while pos < end:
            index, inner = divmod(pos, BLOCK)
            n = min(BLOCK - inner, end - pos)
            block = self._block(index, top)
            yield block[inner:inner + n] if block is not None else bytes(n)
            pos += n

    def sha256(self, layer: Layer | None = None) -> str:
        h = hashlib.sha256()
        for chunk in self.iter_read(0, self.capacity, layer):
            h.update(chunk)
        return h.hexdigest()

    def allocated(self, layer: Layer | None = None) -> list[int]:
        """Indices of the allocated blocks as seen through `layer`."""
        top = self.layers.index(layer) if layer else len(self.layers) - 1
        seen: dict[int, bool] = {}
        for i in range(top, -1, -1):
            for index, block in self.layers[i].blocks.items():
                seen.setdefault(index, block is not None)
        return sorted(i for i, present in seen.items() if present)

    # -- snapshots

    def snapshot(self, ref: str) -> None:
        """The running layer is frozen for snapshot `ref`; writes go to a new delta. A
        snapshot is a stun: CBT enabled but not yet in effect starts here."""
        if self.pending:
            self.start_tracking()
        self.frozen[ref] = self.layers[-1]
        self.deltas_made += 1
        stem = self.base[:-len(".vmdk")] if self.base.endswith(".vmdk") else self.base
        self.layers.append(Layer(f"{stem}-{self.deltas_made:06d}.vmdk"))
        if self.tracking:
            self.seq += 1
            self.epochs[self.seq] = set()
            self.snap_seq[ref] = self.change_id()
        else:
            self.snap_seq[ref] = ""

    def remove_snapshot(self, ref: str) -> None:
        """Consolidate: the layer written after `ref` merges into the layer `ref` froze (so
        removing the last snapshot writes the delta into the base)."""
        layer = self.frozen.pop(ref, None)
        self.snap_seq.pop(ref, None)
        if layer is None:
            return
        i = self.layers.index(layer)
        child = self.layers.pop(i + 1)
        for index, block in child.blocks.items():
            if block is None and i == 0:
                layer.blocks.pop(index, None)
            else:
                layer.blocks[index] = block
        for other, frozen in self.frozen.items():
            if frozen is child:
                self.frozen[other] = layer

    # -- CBT

    def _track(self, index: int) -> None:
        if self.tracking:
            self.epochs.setdefault(self.seq, set()).add(index)

    def change_id(self) -> str:
        return f"{self.tracking}/{self.seq}" if self.tracking else ""

    def start_tracking(self) -> None:
        """A new tracking uuid: every earlier changeId of this disk becomes unknown."""
        self.tracking, self.seq, self.pending = new_tracking_uuid(), 0, False
        self.epochs = {0: set()}

    def stop_tracking(self) -> None:
        self.tracking, self.pending, self.seq, self.epochs = None, False, 0, {}

    def changed_blocks(self, snapshot: str, change_id: str) -> list[int]:
        """Blocks that differ between `change_id` and `snapshot` ("*": allocated blocks)."""
        layer = self.frozen[snapshot]
        if change_id == "*":
            return self.allocated(layer)
        match = CHANGE_ID.match(change_id)
        if not match:
            raise ChangeIdError(f"changeId {change_id!r} is not a changeId", malformed=True)
        at = self.snap_seq.get(snapshot, "")
        at_match = CHANGE_ID.match(at)
        if (not at_match or match.group(1) != self.tracking or at_match.group(1) != self.tracking
                or int(match.group(2)) > int(at_match.group(2))):
            raise ChangeIdError(f"changeId {change_id!r} is unknown to the disk's change "
                                f"tracking")
        start, end = int(match.group(2)), int(at_match.group(2))
        blocks: set[int] = set()
        for s in range(start, end):
            blocks |= self.epochs.get(s, set())
        return sorted(blocks)


def extents(blocks: list[int], start: int, span: int, max_extents: int, capacity: int,
            ) -> tuple[int, list[tuple[int, int]]]:
    """DiskChangeInfo for one answer: (length covered from `start`, [(start, length)]),
    covering at most `span` bytes or `max_extents` extents, whichever ends first."""
    end = min(capacity, start + span)
    out: list[tuple[int, int]] = []
    for index in blocks:
        a, b = index * BLOCK, min((index + 1) * BLOCK, capacity)
        if b <= start or a >= end:
            continue
        a, b = max(a, start), min(b, end)
        if out and out[-1][0] + out[-1][1] == a:
            out[-1] = (out[-1][0], b - out[-1][0])
            continue
        if len(out) == max_extents:
            return out[-1][0] + out[-1][1] - start, out
        out.append((a, b - a))
    return end - start, out
