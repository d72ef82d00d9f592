import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TransferStats(_message.Message):
    __slots__ = ("bytes_read", "bytes_sent", "bytes_stored", "chunks_read", "chunks_sent", "chunks_unchanged", "chunks_zero", "chunks_stored", "chunks_deduplicated")
    BYTES_READ_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    BYTES_STORED_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_READ_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_SENT_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_ZERO_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_STORED_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_DEDUPLICATED_FIELD_NUMBER: _ClassVar[int]
    bytes_read: int
    bytes_sent: int
    bytes_stored: int
    chunks_read: int
    chunks_sent: int
    chunks_unchanged: int
    chunks_zero: int
    chunks_stored: int
    chunks_deduplicated: int
    def __init__(self, bytes_read: _Optional[int] = ..., bytes_sent: _Optional[int] = ..., bytes_stored: _Optional[int] = ..., chunks_read: _Optional[int] = ..., chunks_sent: _Optional[int] = ..., chunks_unchanged: _Optional[int] = ..., chunks_zero: _Optional[int] = ..., chunks_stored: _Optional[int] = ..., chunks_deduplicated: _Optional[int] = ...) -> None: ...

class Checkpoint(_message.Message):
    __slots__ = ("watermark_chunk", "segments", "tail", "snapshot_id", "changed_blocks")
    WATERMARK_CHUNK_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    TAIL_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    CHANGED_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    watermark_chunk: int
    segments: _containers.RepeatedScalarFieldContainer[str]
    tail: bytes
    snapshot_id: str
    changed_blocks: int
    def __init__(self, watermark_chunk: _Optional[int] = ..., segments: _Optional[_Iterable[str]] = ..., tail: _Optional[bytes] = ..., snapshot_id: _Optional[str] = ..., changed_blocks: _Optional[int] = ...) -> None: ...

class TaskError(_message.Message):
    __slots__ = ("reason", "message", "retryable")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    reason: str
    message: str
    retryable: bool
    def __init__(self, reason: _Optional[str] = ..., message: _Optional[str] = ..., retryable: _Optional[bool] = ...) -> None: ...

class BadChunk(_message.Message):
    __slots__ = ("disk", "offset", "length", "reason")
    DISK_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    disk: str
    offset: int
    length: int
    reason: str
    def __init__(self, disk: _Optional[str] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class Operation(_message.Message):
    __slots__ = ("name", "kind", "state", "done", "target", "bytes_done", "bytes_total", "create_time", "end_time", "error", "restore_result", "verify_result", "gc_result")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESTORE_RESULT_FIELD_NUMBER: _ClassVar[int]
    VERIFY_RESULT_FIELD_NUMBER: _ClassVar[int]
    GC_RESULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    state: str
    done: bool
    target: str
    bytes_done: int
    bytes_total: int
    create_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    error: TaskError
    restore_result: RestoreResult
    verify_result: VerifyResult
    gc_result: GcResult
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., state: _Optional[str] = ..., done: _Optional[bool] = ..., target: _Optional[str] = ..., bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[_Union[TaskError, _Mapping]] = ..., restore_result: _Optional[_Union[RestoreResult, _Mapping]] = ..., verify_result: _Optional[_Union[VerifyResult, _Mapping]] = ..., gc_result: _Optional[_Union[GcResult, _Mapping]] = ...) -> None: ...

class GcResult(_message.Message):
    __slots__ = ("points", "objects_removed", "bytes_removed", "objects_kept", "bytes_kept", "objects_young", "bytes_young")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    BYTES_REMOVED_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_KEPT_FIELD_NUMBER: _ClassVar[int]
    BYTES_KEPT_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_YOUNG_FIELD_NUMBER: _ClassVar[int]
    BYTES_YOUNG_FIELD_NUMBER: _ClassVar[int]
    points: int
    objects_removed: int
    bytes_removed: int
    objects_kept: int
    bytes_kept: int
    objects_young: int
    bytes_young: int
    def __init__(self, points: _Optional[int] = ..., objects_removed: _Optional[int] = ..., bytes_removed: _Optional[int] = ..., objects_kept: _Optional[int] = ..., bytes_kept: _Optional[int] = ..., objects_young: _Optional[int] = ..., bytes_young: _Optional[int] = ...) -> None: ...

class RestoreResult(_message.Message):
    __slots__ = ("destination_path", "bytes_written", "root_hash", "volume_id", "datastore_path", "verified")
    DESTINATION_PATH_FIELD_NUMBER: _ClassVar[int]
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    ROOT_HASH_FIELD_NUMBER: _ClassVar[int]
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    DATASTORE_PATH_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_FIELD_NUMBER: _ClassVar[int]
    destination_path: str
    bytes_written: int
    root_hash: str
    volume_id: str
    datastore_path: str
    verified: str
    def __init__(self, destination_path: _Optional[str] = ..., bytes_written: _Optional[int] = ..., root_hash: _Optional[str] = ..., volume_id: _Optional[str] = ..., datastore_path: _Optional[str] = ..., verified: _Optional[str] = ...) -> None: ...

class AwsSettings(_message.Message):
    __slots__ = ("region", "endpoint_url", "profile", "access_key_id", "secret_access_key", "session_token")
    REGION_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_URL_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    ACCESS_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SECRET_ACCESS_KEY_FIELD_NUMBER: _ClassVar[int]
    SESSION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    region: str
    endpoint_url: str
    profile: str
    access_key_id: str
    secret_access_key: str
    session_token: str
    def __init__(self, region: _Optional[str] = ..., endpoint_url: _Optional[str] = ..., profile: _Optional[str] = ..., access_key_id: _Optional[str] = ..., secret_access_key: _Optional[str] = ..., session_token: _Optional[str] = ...) -> None: ...

class VsphereSettings(_message.Message):
    __slots__ = ("url", "user", "password", "ca_file", "thumbprint", "datacenter")
    URL_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    CA_FILE_FIELD_NUMBER: _ClassVar[int]
    THUMBPRINT_FIELD_NUMBER: _ClassVar[int]
    DATACENTER_FIELD_NUMBER: _ClassVar[int]
    url: str
    user: str
    password: str
    ca_file: str
    thumbprint: str
    datacenter: str
    def __init__(self, url: _Optional[str] = ..., user: _Optional[str] = ..., password: _Optional[str] = ..., ca_file: _Optional[str] = ..., thumbprint: _Optional[str] = ..., datacenter: _Optional[str] = ...) -> None: ...

class AzureSettings(_message.Message):
    __slots__ = ("subscription_id", "resource_groups", "location", "tenant_id", "client_id", "client_secret", "client_certificate", "arm_endpoint", "authority_host", "ca_file", "storage_account_url", "storage_account_key")
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_GROUPS_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SECRET_FIELD_NUMBER: _ClassVar[int]
    CLIENT_CERTIFICATE_FIELD_NUMBER: _ClassVar[int]
    ARM_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    AUTHORITY_HOST_FIELD_NUMBER: _ClassVar[int]
    CA_FILE_FIELD_NUMBER: _ClassVar[int]
    STORAGE_ACCOUNT_URL_FIELD_NUMBER: _ClassVar[int]
    STORAGE_ACCOUNT_KEY_FIELD_NUMBER: _ClassVar[int]
    subscription_id: str
    resource_groups: _containers.RepeatedScalarFieldContainer[str]
    location: str
    tenant_id: str
    client_id: str
    client_secret: str
    client_certificate: str
    arm_endpoint: str
    authority_host: str
    ca_file: str
    storage_account_url: str
    storage_account_key: str
    def __init__(self, subscription_id: _Optional[str] = ..., resource_groups: _Optional[_Iterable[str]] = ..., location: _Optional[str] = ..., tenant_id: _Optional[str] = ..., client_id: _Optional[str] = ..., client_secret: _Optional[str] = ..., client_certificate: _Optional[str] = ..., arm_endpoint: _Optional[str] = ..., authority_host: _Optional[str] = ..., ca_file: _Optional[str] = ..., storage_account_url: _Optional[str] = ..., storage_account_key: _Optional[str] = ...) -> None: ...

class SiteSettings(_message.Message):
    __slots__ = ("aws", "vsphere", "azure")
    AWS_FIELD_NUMBER: _ClassVar[int]
    VSPHERE_FIELD_NUMBER: _ClassVar[int]
    AZURE_FIELD_NUMBER: _ClassVar[int]
    aws: AwsSettings
    vsphere: VsphereSettings
    azure: AzureSettings
    def __init__(self, aws: _Optional[_Union[AwsSettings, _Mapping]] = ..., vsphere: _Optional[_Union[VsphereSettings, _Mapping]] = ..., azure: _Optional[_Union[AzureSettings, _Mapping]] = ...) -> None: ...

class VerifyResult(_message.Message):
    __slots__ = ("ok", "chunks_checked", "bad_chunks")
    OK_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_CHECKED_FIELD_NUMBER: _ClassVar[int]
    BAD_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    chunks_checked: int
    bad_chunks: _containers.RepeatedCompositeFieldContainer[BadChunk]
    def __init__(self, ok: _Optional[bool] = ..., chunks_checked: _Optional[int] = ..., bad_chunks: _Optional[_Iterable[_Union[BadChunk, _Mapping]]] = ...) -> None: ...
