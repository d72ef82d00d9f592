"""The block-oriented repository format v1 (docs/FORMAT.md): storage, encodings, API."""

from dr_common.repository.format import (
    COMPRESSIONS,
    DEFAULT_CHUNK_SIZE,
    FORMAT_NAME,
    FORMAT_VERSION,
    ID_SIZE,
    SEGMENT_CHUNKS,
    ZERO_ID,
    chunk_id,
    chunk_key,
    compute_root,
    decode_chunk,
    decode_segment,
    encode_chunk,
    encode_segment,
    manifest_key,
    point_key,
    segment_key,
)
from dr_common.repository.manifest import DiskManifest, PointDisk, RecoveryPointRecord
from dr_common.repository.repository import (
    BadChunk,
    ManifestWriter,
    Repository,
    VerifyReport,
)
from dr_common.repository.store import FsStore, ObjectStore

__all__ = [
    "COMPRESSIONS",
    "DEFAULT_CHUNK_SIZE",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "ID_SIZE",
    "SEGMENT_CHUNKS",
    "ZERO_ID",
    "BadChunk",
    "DiskManifest",
    "FsStore",
    "ManifestWriter",
    "ObjectStore",
    "PointDisk",
    "RecoveryPointRecord",
    "Repository",
    "VerifyReport",
    "chunk_id",
    "chunk_key",
    "compute_root",
    "decode_chunk",
    "decode_segment",
    "encode_chunk",
    "encode_segment",
    "manifest_key",
    "point_key",
    "segment_key",
]
