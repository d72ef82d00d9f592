"""The footer of a fixed VHD: the 512 bytes after a disk's data that make it a VHD.

Azure's managed-disk direct upload takes a *fixed VHD*: `uploadSizeBytes` is the
virtual size plus this footer, and Azure reads the footer when access is revoked.
Layout, checksum and the CHS geometry are those of Microsoft's "Virtual Hard Disk Image
Format Specification" (v1.0, 2006), section "Hard Disk Footer Format".
"""

from __future__ import annotations

import struct
import time
import uuid

FOOTER_SIZE = 512
_VHD_EPOCH = 946684800  # 2000-01-01T00:00:00Z, the spec's time origin
_FIXED = 2


def geometry(size: int) -> tuple[int, int, int]:
    """(cylinders, heads, sectors per track) for `size` bytes, the spec's algorithm."""
    total = min(size // 512, 65535 * 16 * 255)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max((cth + 1023) // 1024, 4)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return cth // heads, heads, spt


def footer(size: int, *, disk_id: uuid.UUID | None = None, now: float | None = None) -> bytes:
    """The footer of a fixed VHD whose data is `size` bytes (a multiple of 512)."""
    if size <= 0 or size % 512:
        raise ValueError(f"a VHD's size is a positive multiple of 512; got {size}")
    cylinders, heads, spt = geometry(size)
    stamp = int((time.time() if now is None else now) - _VHD_EPOCH) & 0xFFFFFFFF
    fields = struct.pack(
        ">8sIIQI4sI4sQQHBBII16sB",
        b"conectix", 2, 0x00010000, 0xFFFFFFFFFFFFFFFF, stamp, b"hdr ", 0x00010000,
        b"Wi2k", size, size, cylinders, heads, spt, _FIXED, 0,
        (disk_id or uuid.uuid4()).bytes, 0)
    checksum = ~sum(fields) & 0xFFFFFFFF
    # The checksum is the field after the disk type: offset 64.
    data = fields[:64] + struct.pack(">I", checksum) + fields[68:]
    return data.ljust(FOOTER_SIZE, b"\0")


def check(data: bytes, size: int) -> str:
    """"" if `data` is a valid fixed-VHD footer for `size` bytes, else what is wrong."""
    if len(data) != FOOTER_SIZE or data[:8] != b"conectix":
        return "no VHD footer (cookie 'conectix' missing)"
    (stored,) = struct.unpack(">I", data[64:68])
    if ~(sum(data[:64]) + sum(data[68:])) & 0xFFFFFFFF != stored:
        return "VHD footer checksum does not match"
    current, disk_type = struct.unpack(">Q", data[48:56])[0], struct.unpack(">I", data[60:64])[0]
    if disk_type != _FIXED:
        return f"not a fixed VHD (disk type {disk_type})"
    if current != size:
        return f"VHD footer says {current} bytes, the disk has {size}"
    return ""
