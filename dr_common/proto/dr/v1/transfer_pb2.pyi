from dr_common.proto.dr.v1 import common_pb2 as _common_pb2
from dr_common.proto.dr.v1 import nodes_pb2 as _nodes_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TransferRequest(_message.Message):
    __slots__ = ("open", "chunk", "commit", "call")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    open: OpenDisk
    chunk: ChunkData
    commit: CommitIds
    call: Call
    def __init__(self, open: _Optional[_Union[OpenDisk, _Mapping]] = ..., chunk: _Optional[_Union[ChunkData, _Mapping]] = ..., commit: _Optional[_Union[CommitIds, _Mapping]] = ..., call: _Optional[_Union[Call, _Mapping]] = ...) -> None: ...

class TransferResponse(_message.Message):
    __slots__ = ("opened", "ack", "reply")
    OPENED_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    opened: DiskOpened
    ack: ChunkAck
    reply: CallReply
    def __init__(self, opened: _Optional[_Union[DiskOpened, _Mapping]] = ..., ack: _Optional[_Union[ChunkAck, _Mapping]] = ..., reply: _Optional[_Union[CallReply, _Mapping]] = ...) -> None: ...

class OpenDisk(_message.Message):
    __slots__ = ("task", "lease_token", "disk", "target", "size_bytes", "chunk_size_bytes", "compression", "previous_root_hash", "checkpoint")
    TASK_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DISK_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_ROOT_HASH_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    task: str
    lease_token: int
    disk: str
    target: _nodes_pb2.TargetLocator
    size_bytes: int
    chunk_size_bytes: int
    compression: str
    previous_root_hash: str
    checkpoint: _common_pb2.Checkpoint
    def __init__(self, task: _Optional[str] = ..., lease_token: _Optional[int] = ..., disk: _Optional[str] = ..., target: _Optional[_Union[_nodes_pb2.TargetLocator, _Mapping]] = ..., size_bytes: _Optional[int] = ..., chunk_size_bytes: _Optional[int] = ..., compression: _Optional[str] = ..., previous_root_hash: _Optional[str] = ..., checkpoint: _Optional[_Union[_common_pb2.Checkpoint, _Mapping]] = ...) -> None: ...

class DiskOpened(_message.Message):
    __slots__ = ("start_chunk", "has_previous", "chunk_id_key", "segment_chunks", "credit_limit_bytes")
    START_CHUNK_FIELD_NUMBER: _ClassVar[int]
    HAS_PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ID_KEY_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    CREDIT_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    start_chunk: int
    has_previous: bool
    chunk_id_key: bytes
    segment_chunks: int
    credit_limit_bytes: int
    def __init__(self, start_chunk: _Optional[int] = ..., has_previous: _Optional[bool] = ..., chunk_id_key: _Optional[bytes] = ..., segment_chunks: _Optional[int] = ..., credit_limit_bytes: _Optional[int] = ...) -> None: ...

class ChunkData(_message.Message):
    __slots__ = ("index", "id", "data")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    index: int
    id: bytes
    data: bytes
    def __init__(self, index: _Optional[int] = ..., id: _Optional[bytes] = ..., data: _Optional[bytes] = ...) -> None: ...

class ChunkAck(_message.Message):
    __slots__ = ("index", "outcome", "credit_limit_bytes")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    CREDIT_LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    index: int
    outcome: str
    credit_limit_bytes: int
    def __init__(self, index: _Optional[int] = ..., outcome: _Optional[str] = ..., credit_limit_bytes: _Optional[int] = ...) -> None: ...

class CommitIds(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: bytes
    def __init__(self, ids: _Optional[bytes] = ...) -> None: ...

class Call(_message.Message):
    __slots__ = ("call_id", "previous_segment", "probe_id", "checkpoint", "finish", "ping")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SEGMENT_FIELD_NUMBER: _ClassVar[int]
    PROBE_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    FINISH_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    previous_segment: int
    probe_id: bytes
    checkpoint: bool
    finish: bool
    ping: bool
    def __init__(self, call_id: _Optional[int] = ..., previous_segment: _Optional[int] = ..., probe_id: _Optional[bytes] = ..., checkpoint: _Optional[bool] = ..., finish: _Optional[bool] = ..., ping: _Optional[bool] = ...) -> None: ...

class CallReply(_message.Message):
    __slots__ = ("call_id", "ids", "stored", "checkpoint", "finished", "pong")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    ids: bytes
    stored: bool
    checkpoint: _common_pb2.Checkpoint
    finished: DiskFinished
    pong: bool
    def __init__(self, call_id: _Optional[int] = ..., ids: _Optional[bytes] = ..., stored: _Optional[bool] = ..., checkpoint: _Optional[_Union[_common_pb2.Checkpoint, _Mapping]] = ..., finished: _Optional[_Union[DiskFinished, _Mapping]] = ..., pong: _Optional[bool] = ...) -> None: ...

class DiskFinished(_message.Message):
    __slots__ = ("size_bytes", "root_hash")
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ROOT_HASH_FIELD_NUMBER: _ClassVar[int]
    size_bytes: int
    root_hash: str
    def __init__(self, size_bytes: _Optional[int] = ..., root_hash: _Optional[str] = ...) -> None: ...
