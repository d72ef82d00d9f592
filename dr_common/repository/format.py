"""Repository format v1: constants, object names and the byte encodings (no I/O).

Everything a reader needs to decode stored objects lives here, so `docs/FORMAT.md` and
this module can be checked against each other line by line. Functions are pure: they
never touch storage, which keeps them usable from threads and easy to test.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence

import blake3
import zstandard

from dr_common.errors import CorruptData, RepositoryError

FORMAT_NAME = "hybrid-dr-repository"
FORMAT_VERSION = 1

# The seed product's chunk size: large enough that per-object overhead (a request, a
# file, a 32-byte id) is small next to the data, small enough that a few changed
# bytes do not resend much. Plans may choose another size; the manifest records it.
DEFAULT_CHUNK_SIZE = 1 << 20

# Chunk ids per manifest segment. A segment is then 32 KiB of ids covering 1 GiB of
# disk at the default chunk size, and a 1 TiB disk has 1024 segments (a 64 KiB root
# list). Smaller segments would bloat the root list that every recovery point writes
# whole; larger ones would make one changed chunk rewrite more metadata. Fixed in v1 so
# identical disk regions give identical segments (dedup of metadata across points).
SEGMENT_CHUNKS = 1024

ID_SIZE = 32

# The segment entry for a chunk that is a hole or all zeros. Such chunks are never
# stored: the reader fills zeros. A real keyed hash equal to this is not a practical
# concern (2**-256).
ZERO_ID = bytes(ID_SIZE)

COMPRESSIONS = ("none", "zstd")

# Bytes an encoded chunk may add to its data: the header. Memory accounting needs it.
CHUNK_OVERHEAD = 1
# Chunk header byte: how the payload after it is encoded.
CHUNK_RAW = 0
CHUNK_ZSTD = 1

# Level 3 is zstd's default: most of the ratio at a speed well above WAN bandwidth.
ZSTD_LEVEL = 3

# A zstd frame declares its decoded size; refuse absurd declarations before allocating,
# so a damaged or hostile object cannot make a reader allocate unbounded memory. No
# sane chunk size comes near this.
MAX_DECODED_CHUNK = 1 << 30

SEGMENT_MAGIC = b"DRSG"
SEGMENT_VERSION = 1
# magic, u8 version, u64 first_chunk, u32 count (little-endian)
_SEGMENT_HEADER = struct.Struct("<4sBQI")

ROOT_MAGIC = b"DRRT"
ROOT_VERSION = 1
# magic, u8 version, u64 size, u64 chunk_size, u32 segment_chunks, u32 segment count
_ROOT_HEADER = struct.Struct("<4sBQQII")

_HEX64 = re.compile(r"[0-9a-f]{64}")
_POINT_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
# Point ids become file names; leave room for the ".json" suffix in 255-byte names.
MAX_POINT_ID = 200


def chunk_id(key: bytes, data: bytes | bytearray | memoryview) -> bytes:
    """The 32-byte name of a chunk: BLAKE3 keyed with the repository's chunk key.

    Keyed so equal data dedups within and across disks while someone who can list the
    repository but lacks the key cannot confirm a guess of the content.
    """
    return blake3.blake3(data, key=key).digest()


def keyed_hex(key: bytes, data: bytes | bytearray | memoryview) -> str:
    """Hex keyed BLAKE3, the name of segments and the manifest root."""
    return blake3.blake3(data, key=key).hexdigest()


def encode_chunk_in_place(frame: bytearray | memoryview, length: int,
                          compression: str) -> bytes | memoryview:
    """Encodes a chunk whose data sits at frame[CHUNK_OVERHEAD:CHUNK_OVERHEAD + length].

    Uncompressed chunks get their header byte written in front of the data and are
    returned as a view of `frame`: no allocation and no copy per chunk, which matters at
    a gigabyte per second (a copy holds the GIL, and allocating under memory pressure
    can stall it). Compressed chunks are new bytes, as in `encode_chunk`.
    """
    view = memoryview(frame)
    data = view[CHUNK_OVERHEAD:CHUNK_OVERHEAD + length]
    if compression != "none":
        encoded = encode_chunk(data, compression)
        if encoded[0] != CHUNK_RAW:
            return encoded
    view[0] = CHUNK_RAW
    return view[:CHUNK_OVERHEAD + length]


def encode_chunk(data: bytes | bytearray | memoryview, compression: str) -> bytes:
    """One header byte (0 raw, 1 zstd) then the payload.

    Compression that does not shrink the chunk is dropped, so incompressible data
    (already compressed or encrypted files) costs one byte, not a decompression on read.
    """
    if compression not in COMPRESSIONS:
        raise RepositoryError(
            f"unknown chunk compression {compression!r}; use one of {', '.join(COMPRESSIONS)}"
        )
    if compression == "zstd":
        packed = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True).compress(
            data
        )
        if len(packed) < len(data):
            return bytes((CHUNK_ZSTD,)) + packed
    return bytes((CHUNK_RAW,)) + bytes(data)


def decode_chunk(blob: bytes | bytearray | memoryview) -> bytes:
    """The chunk's data; CorruptData if the header or payload cannot be decoded."""
    if len(blob) == 0:
        raise CorruptData("chunk object is empty: no header byte")
    view = memoryview(blob)
    header, payload = view[0], view[1:]
    if header == CHUNK_RAW:
        return bytes(payload)
    if header == CHUNK_ZSTD:
        try:
            size = zstandard.frame_content_size(payload)
        except zstandard.ZstdError as e:
            raise CorruptData(f"chunk zstd frame is invalid: {e}") from None
        # Writers always record the size (write_content_size=True); -1 means unknown.
        if size < 0 or size > MAX_DECODED_CHUNK:
            raise CorruptData(f"chunk zstd frame declares an invalid size ({size})")
        try:
            data = zstandard.ZstdDecompressor().decompress(payload)
        except zstandard.ZstdError as e:
            raise CorruptData(f"chunk zstd payload cannot be decoded: {e}") from None
        if len(data) != size:
            raise CorruptData("chunk zstd payload is shorter than its declared size")
        return data
    raise CorruptData(f"chunk has unknown encoding header {header}")


def encode_segment(first_chunk: int, ids: Sequence[bytes]) -> bytes:
    """Binary segment: b"DRSG", u8 1, u64 first_chunk, u32 count, count * 32-byte ids."""
    for cid in ids:
        if len(cid) != ID_SIZE:
            raise ValueError(f"chunk id must be {ID_SIZE} bytes, got {len(cid)}")
    header = _SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, first_chunk, len(ids))
    return header + b"".join(ids)


def decode_segment(blob: bytes | bytearray | memoryview) -> tuple[int, list[bytes]]:
    """(first_chunk, ids); CorruptData on a bad magic, version or length."""
    if len(blob) < _SEGMENT_HEADER.size:
        raise CorruptData(f"segment is truncated ({len(blob)} bytes)")
    magic, version, first_chunk, count = _SEGMENT_HEADER.unpack_from(blob)
    if magic != SEGMENT_MAGIC:
        raise CorruptData(f"segment has a bad magic {magic!r}")
    if version != SEGMENT_VERSION:
        raise CorruptData(f"segment has unknown version {version}")
    body = bytes(memoryview(blob)[_SEGMENT_HEADER.size :])
    if len(body) != count * ID_SIZE:
        raise CorruptData(
            f"segment declares {count} ids but holds {len(body)} bytes of ids"
        )
    return first_chunk, [body[i : i + ID_SIZE] for i in range(0, len(body), ID_SIZE)]


def compute_root(
    key: bytes, size: int, chunk_size: int, segment_chunks: int, segments: Sequence[str]
) -> str:
    """The disk's root hash: hex keyed BLAKE3 over b"DRRT", u8 1, u64 size,
    u64 chunk_size, u32 segment_chunks, u32 count, then each segment id's 32 raw bytes.

    Binding the geometry (not only the segment list) means a manifest whose size or
    chunk size was altered no longer matches its root.
    """
    raw = []
    for seg in segments:
        check_hex_id(seg, "segment id")
        raw.append(bytes.fromhex(seg))
    header = _ROOT_HEADER.pack(
        ROOT_MAGIC, ROOT_VERSION, size, chunk_size, segment_chunks, len(raw)
    )
    return keyed_hex(key, header + b"".join(raw))


def check_hex_id(value: str, what: str) -> str:
    """Return `value` if it is 64 lowercase hex digits, else RepositoryError."""
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise RepositoryError(f"{what} must be 64 lowercase hex digits, got {value!r}")
    return value


def chunk_key(id: bytes) -> str:  # noqa: A002 - the spec's name for the argument
    if len(id) != ID_SIZE:
        raise RepositoryError(f"chunk id must be {ID_SIZE} bytes, got {len(id)}")
    h = id.hex()
    return f"chunks/{h[:2]}/{h}"


def segment_key(id_hex: str) -> str:
    check_hex_id(id_hex, "segment id")
    return f"segments/{id_hex[:2]}/{id_hex}"


def manifest_key(root_hex: str) -> str:
    check_hex_id(root_hex, "root hash")
    return f"manifests/{root_hex}.json"


def check_point_id(point_id: str) -> str:
    """Return `point_id` if it is a valid recovery point id, else RepositoryError.

    A leading dot is refused too: ids become file names, and dot files are hidden (and
    ".tmp-" names are a store's in-flight writes).
    """
    if (
        not isinstance(point_id, str)
        or len(point_id) > MAX_POINT_ID
        or not _POINT_ID.fullmatch(point_id)
    ):
        raise RepositoryError(
            f"invalid recovery point id {point_id!r}: use 1-{MAX_POINT_ID} characters "
            "from A-Z a-z 0-9 . _ - (not starting with '.')"
        )
    return point_id


def point_key(point_id: str) -> str:
    return f"points/{check_point_id(point_id)}.json"
