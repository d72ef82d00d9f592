import datetime

from dr_common.proto.dr.v1 import common_pb2 as _common_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecoveryPoint(_message.Message):
    __slots__ = ("name", "create_time", "cycle", "disks", "stats", "locked", "state")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    CYCLE_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    LOCKED_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    create_time: _timestamp_pb2.Timestamp
    cycle: str
    disks: _containers.RepeatedCompositeFieldContainer[RecoveryPointDisk]
    stats: _common_pb2.TransferStats
    locked: bool
    state: str
    def __init__(self, name: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cycle: _Optional[str] = ..., disks: _Optional[_Iterable[_Union[RecoveryPointDisk, _Mapping]]] = ..., stats: _Optional[_Union[_common_pb2.TransferStats, _Mapping]] = ..., locked: _Optional[bool] = ..., state: _Optional[str] = ...) -> None: ...

class RecoveryPointDisk(_message.Message):
    __slots__ = ("disk", "size_bytes", "root_hash", "full_sync", "full_sync_reason", "snapshot_id", "consistency", "spread_seconds")
    DISK_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ROOT_HASH_FIELD_NUMBER: _ClassVar[int]
    FULL_SYNC_FIELD_NUMBER: _ClassVar[int]
    FULL_SYNC_REASON_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    SPREAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    disk: str
    size_bytes: int
    root_hash: str
    full_sync: bool
    full_sync_reason: str
    snapshot_id: str
    consistency: str
    spread_seconds: float
    def __init__(self, disk: _Optional[str] = ..., size_bytes: _Optional[int] = ..., root_hash: _Optional[str] = ..., full_sync: _Optional[bool] = ..., full_sync_reason: _Optional[str] = ..., snapshot_id: _Optional[str] = ..., consistency: _Optional[str] = ..., spread_seconds: _Optional[float] = ...) -> None: ...

class ListRecoveryPointsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRecoveryPointsResponse(_message.Message):
    __slots__ = ("recovery_points", "next_page_token")
    RECOVERY_POINTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    recovery_points: _containers.RepeatedCompositeFieldContainer[RecoveryPoint]
    next_page_token: str
    def __init__(self, recovery_points: _Optional[_Iterable[_Union[RecoveryPoint, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetRecoveryPointRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class VerifyRecoveryPointRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class LockRecoveryPointRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UnlockRecoveryPointRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteRecoveryPointRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CollectGarbageRequest(_message.Message):
    __slots__ = ("parent", "grace_seconds")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    GRACE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    parent: str
    grace_seconds: int
    def __init__(self, parent: _Optional[str] = ..., grace_seconds: _Optional[int] = ...) -> None: ...
