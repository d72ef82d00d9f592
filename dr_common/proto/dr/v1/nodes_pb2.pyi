import datetime

from dr_common.proto.dr.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Node(_message.Message):
    __slots__ = ("name", "hostname", "version", "max_tasks", "budget_bytes", "state", "last_heartbeat_time", "running_tasks", "inflight_bytes", "draining", "backpressure", "leased_tasks", "load", "site", "transfer_address", "pairs")
    NAME_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_TASKS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_TIME_FIELD_NUMBER: _ClassVar[int]
    RUNNING_TASKS_FIELD_NUMBER: _ClassVar[int]
    INFLIGHT_BYTES_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    BACKPRESSURE_FIELD_NUMBER: _ClassVar[int]
    LEASED_TASKS_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    name: str
    hostname: str
    version: str
    max_tasks: int
    budget_bytes: int
    state: str
    last_heartbeat_time: _timestamp_pb2.Timestamp
    running_tasks: int
    inflight_bytes: int
    draining: bool
    backpressure: float
    leased_tasks: int
    load: float
    site: str
    transfer_address: str
    pairs: _containers.RepeatedCompositeFieldContainer[PairHealth]
    def __init__(self, name: _Optional[str] = ..., hostname: _Optional[str] = ..., version: _Optional[str] = ..., max_tasks: _Optional[int] = ..., budget_bytes: _Optional[int] = ..., state: _Optional[str] = ..., last_heartbeat_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., running_tasks: _Optional[int] = ..., inflight_bytes: _Optional[int] = ..., draining: _Optional[bool] = ..., backpressure: _Optional[float] = ..., leased_tasks: _Optional[int] = ..., load: _Optional[float] = ..., site: _Optional[str] = ..., transfer_address: _Optional[str] = ..., pairs: _Optional[_Iterable[_Union[PairHealth, _Mapping]]] = ...) -> None: ...

class PairHealth(_message.Message):
    __slots__ = ("node", "address", "streams", "rtt_seconds", "throughput_bytes_per_second", "credit_bytes", "errors")
    NODE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    RTT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    CREDIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    node: str
    address: str
    streams: int
    rtt_seconds: float
    throughput_bytes_per_second: float
    credit_bytes: int
    errors: int
    def __init__(self, node: _Optional[str] = ..., address: _Optional[str] = ..., streams: _Optional[int] = ..., rtt_seconds: _Optional[float] = ..., throughput_bytes_per_second: _Optional[float] = ..., credit_bytes: _Optional[int] = ..., errors: _Optional[int] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("name", "kind", "lease_token", "lease_expire_time", "lease_seconds", "replicate", "finalize", "restore", "verify", "snapshot", "delete", "gc", "drop_snapshots")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REPLICATE_FIELD_NUMBER: _ClassVar[int]
    FINALIZE_FIELD_NUMBER: _ClassVar[int]
    RESTORE_FIELD_NUMBER: _ClassVar[int]
    VERIFY_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    GC_FIELD_NUMBER: _ClassVar[int]
    DROP_SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    lease_token: int
    lease_expire_time: _timestamp_pb2.Timestamp
    lease_seconds: int
    replicate: ReplicateSpec
    finalize: FinalizeSpec
    restore: RestoreSpec
    verify: VerifySpec
    snapshot: SnapshotSpec
    delete: DeleteSpec
    gc: GcSpec
    drop_snapshots: DropSnapshotsSpec
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., lease_token: _Optional[int] = ..., lease_expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lease_seconds: _Optional[int] = ..., replicate: _Optional[_Union[ReplicateSpec, _Mapping]] = ..., finalize: _Optional[_Union[FinalizeSpec, _Mapping]] = ..., restore: _Optional[_Union[RestoreSpec, _Mapping]] = ..., verify: _Optional[_Union[VerifySpec, _Mapping]] = ..., snapshot: _Optional[_Union[SnapshotSpec, _Mapping]] = ..., delete: _Optional[_Union[DeleteSpec, _Mapping]] = ..., gc: _Optional[_Union[GcSpec, _Mapping]] = ..., drop_snapshots: _Optional[_Union[DropSnapshotsSpec, _Mapping]] = ...) -> None: ...

class SourceLocator(_message.Message):
    __slots__ = ("file", "kvm", "aws", "vsphere", "azure", "site")
    FILE_FIELD_NUMBER: _ClassVar[int]
    KVM_FIELD_NUMBER: _ClassVar[int]
    AWS_FIELD_NUMBER: _ClassVar[int]
    VSPHERE_FIELD_NUMBER: _ClassVar[int]
    AZURE_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    file: FileSource
    kvm: KvmSource
    aws: AwsSource
    vsphere: VsphereSource
    azure: AzureSource
    site: _common_pb2.SiteSettings
    def __init__(self, file: _Optional[_Union[FileSource, _Mapping]] = ..., kvm: _Optional[_Union[KvmSource, _Mapping]] = ..., aws: _Optional[_Union[AwsSource, _Mapping]] = ..., vsphere: _Optional[_Union[VsphereSource, _Mapping]] = ..., azure: _Optional[_Union[AzureSource, _Mapping]] = ..., site: _Optional[_Union[_common_pb2.SiteSettings, _Mapping]] = ...) -> None: ...

class FileSource(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class KvmSource(_message.Message):
    __slots__ = ("path", "previous_bitmap", "bitmap", "previous_size", "snapshot")
    PATH_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_BITMAP_FIELD_NUMBER: _ClassVar[int]
    BITMAP_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SIZE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    path: str
    previous_bitmap: str
    bitmap: str
    previous_size: int
    snapshot: str
    def __init__(self, path: _Optional[str] = ..., previous_bitmap: _Optional[str] = ..., bitmap: _Optional[str] = ..., previous_size: _Optional[int] = ..., snapshot: _Optional[str] = ...) -> None: ...

class VsphereSource(_message.Message):
    __slots__ = ("vm_uuid", "device_key", "snapshot", "previous_change_id", "previous_size_bytes")
    VM_UUID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_KEY_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_CHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    vm_uuid: str
    device_key: int
    snapshot: str
    previous_change_id: str
    previous_size_bytes: int
    def __init__(self, vm_uuid: _Optional[str] = ..., device_key: _Optional[int] = ..., snapshot: _Optional[str] = ..., previous_change_id: _Optional[str] = ..., previous_size_bytes: _Optional[int] = ...) -> None: ...

class AzureSource(_message.Message):
    __slots__ = ("disk_id", "snapshot_id", "previous_snapshot_id", "size_bytes")
    DISK_ID_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    disk_id: str
    snapshot_id: str
    previous_snapshot_id: str
    size_bytes: int
    def __init__(self, disk_id: _Optional[str] = ..., snapshot_id: _Optional[str] = ..., previous_snapshot_id: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class AwsSource(_message.Message):
    __slots__ = ("volume_id", "snapshot_id", "previous_snapshot_id", "size_bytes")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    snapshot_id: str
    previous_snapshot_id: str
    size_bytes: int
    def __init__(self, volume_id: _Optional[str] = ..., snapshot_id: _Optional[str] = ..., previous_snapshot_id: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class TargetLocator(_message.Message):
    __slots__ = ("fs", "s3", "ebs", "azblob", "azure_disk", "site")
    FS_FIELD_NUMBER: _ClassVar[int]
    S3_FIELD_NUMBER: _ClassVar[int]
    EBS_FIELD_NUMBER: _ClassVar[int]
    AZBLOB_FIELD_NUMBER: _ClassVar[int]
    AZURE_DISK_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    fs: FsTarget
    s3: S3Target
    ebs: EbsTarget
    azblob: AzblobTarget
    azure_disk: AzureDiskTarget
    site: _common_pb2.SiteSettings
    def __init__(self, fs: _Optional[_Union[FsTarget, _Mapping]] = ..., s3: _Optional[_Union[S3Target, _Mapping]] = ..., ebs: _Optional[_Union[EbsTarget, _Mapping]] = ..., azblob: _Optional[_Union[AzblobTarget, _Mapping]] = ..., azure_disk: _Optional[_Union[AzureDiskTarget, _Mapping]] = ..., site: _Optional[_Union[_common_pb2.SiteSettings, _Mapping]] = ...) -> None: ...

class FsTarget(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class S3Target(_message.Message):
    __slots__ = ("location",)
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    location: str
    def __init__(self, location: _Optional[str] = ...) -> None: ...

class EbsTarget(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AzblobTarget(_message.Message):
    __slots__ = ("location",)
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    location: str
    def __init__(self, location: _Optional[str] = ...) -> None: ...

class AzureDiskTarget(_message.Message):
    __slots__ = ("location",)
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    location: str
    def __init__(self, location: _Optional[str] = ...) -> None: ...

class Pair(_message.Message):
    __slots__ = ("node", "address", "cert_name")
    NODE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CERT_NAME_FIELD_NUMBER: _ClassVar[int]
    node: str
    address: str
    cert_name: str
    def __init__(self, node: _Optional[str] = ..., address: _Optional[str] = ..., cert_name: _Optional[str] = ...) -> None: ...

class ReplicateSpec(_message.Message):
    __slots__ = ("plan", "cycle", "disk", "source", "target", "size_bytes", "chunk_size_bytes", "compression", "previous_root_hash", "previous_snapshot_id", "checkpoint", "checkpoint_interval_bytes", "bandwidth_bytes_per_second", "pair")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    CYCLE_FIELD_NUMBER: _ClassVar[int]
    DISK_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_ROOT_HASH_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_INTERVAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    PAIR_FIELD_NUMBER: _ClassVar[int]
    plan: str
    cycle: str
    disk: str
    source: SourceLocator
    target: TargetLocator
    size_bytes: int
    chunk_size_bytes: int
    compression: str
    previous_root_hash: str
    previous_snapshot_id: str
    checkpoint: _common_pb2.Checkpoint
    checkpoint_interval_bytes: int
    bandwidth_bytes_per_second: int
    pair: Pair
    def __init__(self, plan: _Optional[str] = ..., cycle: _Optional[str] = ..., disk: _Optional[str] = ..., source: _Optional[_Union[SourceLocator, _Mapping]] = ..., target: _Optional[_Union[TargetLocator, _Mapping]] = ..., size_bytes: _Optional[int] = ..., chunk_size_bytes: _Optional[int] = ..., compression: _Optional[str] = ..., previous_root_hash: _Optional[str] = ..., previous_snapshot_id: _Optional[str] = ..., checkpoint: _Optional[_Union[_common_pb2.Checkpoint, _Mapping]] = ..., checkpoint_interval_bytes: _Optional[int] = ..., bandwidth_bytes_per_second: _Optional[int] = ..., pair: _Optional[_Union[Pair, _Mapping]] = ...) -> None: ...

class SnapshotSpec(_message.Message):
    __slots__ = ("plan", "cycle", "source", "disks", "keep_snapshot_ids", "quiesce", "stop_workloads")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    CYCLE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    KEEP_SNAPSHOT_IDS_FIELD_NUMBER: _ClassVar[int]
    QUIESCE_FIELD_NUMBER: _ClassVar[int]
    STOP_WORKLOADS_FIELD_NUMBER: _ClassVar[int]
    plan: str
    cycle: str
    source: SourceLocator
    disks: _containers.RepeatedCompositeFieldContainer[SnapshotDisk]
    keep_snapshot_ids: _containers.RepeatedScalarFieldContainer[str]
    quiesce: bool
    stop_workloads: bool
    def __init__(self, plan: _Optional[str] = ..., cycle: _Optional[str] = ..., source: _Optional[_Union[SourceLocator, _Mapping]] = ..., disks: _Optional[_Iterable[_Union[SnapshotDisk, _Mapping]]] = ..., keep_snapshot_ids: _Optional[_Iterable[str]] = ..., quiesce: _Optional[bool] = ..., stop_workloads: _Optional[bool] = ...) -> None: ...

class SnapshotDisk(_message.Message):
    __slots__ = ("disk", "workload", "locator")
    DISK_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    LOCATOR_FIELD_NUMBER: _ClassVar[int]
    disk: str
    workload: str
    locator: str
    def __init__(self, disk: _Optional[str] = ..., workload: _Optional[str] = ..., locator: _Optional[str] = ...) -> None: ...

class DropSnapshotsSpec(_message.Message):
    __slots__ = ("plan", "cycle", "source", "disks")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    CYCLE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    plan: str
    cycle: str
    source: SourceLocator
    disks: _containers.RepeatedCompositeFieldContainer[SnapshotDisk]
    def __init__(self, plan: _Optional[str] = ..., cycle: _Optional[str] = ..., source: _Optional[_Union[SourceLocator, _Mapping]] = ..., disks: _Optional[_Iterable[_Union[SnapshotDisk, _Mapping]]] = ...) -> None: ...

class SourceSnapshot(_message.Message):
    __slots__ = ("disk", "snapshot_id", "consistency", "spread_seconds")
    DISK_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    SPREAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    disk: str
    snapshot_id: str
    consistency: str
    spread_seconds: float
    def __init__(self, disk: _Optional[str] = ..., snapshot_id: _Optional[str] = ..., consistency: _Optional[str] = ..., spread_seconds: _Optional[float] = ...) -> None: ...

class FinalizeSpec(_message.Message):
    __slots__ = ("plan", "cycle", "recovery_point_id", "target", "disks")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    CYCLE_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_POINT_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    plan: str
    cycle: str
    recovery_point_id: str
    target: TargetLocator
    disks: _containers.RepeatedCompositeFieldContainer[FinalizeDisk]
    def __init__(self, plan: _Optional[str] = ..., cycle: _Optional[str] = ..., recovery_point_id: _Optional[str] = ..., target: _Optional[_Union[TargetLocator, _Mapping]] = ..., disks: _Optional[_Iterable[_Union[FinalizeDisk, _Mapping]]] = ...) -> None: ...

class FinalizeDisk(_message.Message):
    __slots__ = ("disk", "root_hash", "size_bytes", "full_sync", "bitmap", "full_sync_reason", "snapshot_id", "source_snapshot_id", "consistency", "spread_seconds")
    DISK_FIELD_NUMBER: _ClassVar[int]
    ROOT_HASH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    FULL_SYNC_FIELD_NUMBER: _ClassVar[int]
    BITMAP_FIELD_NUMBER: _ClassVar[int]
    FULL_SYNC_REASON_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    SPREAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    disk: str
    root_hash: str
    size_bytes: int
    full_sync: bool
    bitmap: str
    full_sync_reason: str
    snapshot_id: str
    source_snapshot_id: str
    consistency: str
    spread_seconds: float
    def __init__(self, disk: _Optional[str] = ..., root_hash: _Optional[str] = ..., size_bytes: _Optional[int] = ..., full_sync: _Optional[bool] = ..., bitmap: _Optional[str] = ..., full_sync_reason: _Optional[str] = ..., snapshot_id: _Optional[str] = ..., source_snapshot_id: _Optional[str] = ..., consistency: _Optional[str] = ..., spread_seconds: _Optional[float] = ...) -> None: ...

class RestoreSpec(_message.Message):
    __slots__ = ("recovery_point", "disk", "root_hash", "target", "destination_path", "format", "overwrite", "snapshot_id", "availability_zone", "destination")
    RECOVERY_POINT_FIELD_NUMBER: _ClassVar[int]
    DISK_FIELD_NUMBER: _ClassVar[int]
    ROOT_HASH_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_PATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_ZONE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    recovery_point: str
    disk: str
    root_hash: str
    target: TargetLocator
    destination_path: str
    format: str
    overwrite: bool
    snapshot_id: str
    availability_zone: str
    destination: RestoreDestination
    def __init__(self, recovery_point: _Optional[str] = ..., disk: _Optional[str] = ..., root_hash: _Optional[str] = ..., target: _Optional[_Union[TargetLocator, _Mapping]] = ..., destination_path: _Optional[str] = ..., format: _Optional[str] = ..., overwrite: _Optional[bool] = ..., snapshot_id: _Optional[str] = ..., availability_zone: _Optional[str] = ..., destination: _Optional[_Union[RestoreDestination, _Mapping]] = ...) -> None: ...

class RestoreDestination(_message.Message):
    __slots__ = ("vsphere", "azure", "kvm", "site")
    VSPHERE_FIELD_NUMBER: _ClassVar[int]
    AZURE_FIELD_NUMBER: _ClassVar[int]
    KVM_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    vsphere: VsphereDatastoreFile
    azure: AzureManagedDisk
    kvm: KvmImage
    site: _common_pb2.SiteSettings
    def __init__(self, vsphere: _Optional[_Union[VsphereDatastoreFile, _Mapping]] = ..., azure: _Optional[_Union[AzureManagedDisk, _Mapping]] = ..., kvm: _Optional[_Union[KvmImage, _Mapping]] = ..., site: _Optional[_Union[_common_pb2.SiteSettings, _Mapping]] = ...) -> None: ...

class VsphereDatastoreFile(_message.Message):
    __slots__ = ("datacenter", "datastore", "path", "overwrite")
    DATACENTER_FIELD_NUMBER: _ClassVar[int]
    DATASTORE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    datacenter: str
    datastore: str
    path: str
    overwrite: bool
    def __init__(self, datacenter: _Optional[str] = ..., datastore: _Optional[str] = ..., path: _Optional[str] = ..., overwrite: _Optional[bool] = ...) -> None: ...

class AzureManagedDisk(_message.Message):
    __slots__ = ("name", "size_bytes", "tags", "sku")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    SKU_FIELD_NUMBER: _ClassVar[int]
    name: str
    size_bytes: int
    tags: _containers.ScalarMap[str, str]
    sku: str
    def __init__(self, name: _Optional[str] = ..., size_bytes: _Optional[int] = ..., tags: _Optional[_Mapping[str, str]] = ..., sku: _Optional[str] = ...) -> None: ...

class KvmImage(_message.Message):
    __slots__ = ("path", "overwrite")
    PATH_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    path: str
    overwrite: bool
    def __init__(self, path: _Optional[str] = ..., overwrite: _Optional[bool] = ...) -> None: ...

class VerifySpec(_message.Message):
    __slots__ = ("recovery_point", "target", "disks")
    RECOVERY_POINT_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    recovery_point: str
    target: TargetLocator
    disks: _containers.RepeatedCompositeFieldContainer[FinalizeDisk]
    def __init__(self, recovery_point: _Optional[str] = ..., target: _Optional[_Union[TargetLocator, _Mapping]] = ..., disks: _Optional[_Iterable[_Union[FinalizeDisk, _Mapping]]] = ...) -> None: ...

class DeleteSpec(_message.Message):
    __slots__ = ("recovery_point", "recovery_point_id", "target", "snapshot_ids")
    RECOVERY_POINT_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_POINT_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_IDS_FIELD_NUMBER: _ClassVar[int]
    recovery_point: str
    recovery_point_id: str
    target: TargetLocator
    snapshot_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, recovery_point: _Optional[str] = ..., recovery_point_id: _Optional[str] = ..., target: _Optional[_Union[TargetLocator, _Mapping]] = ..., snapshot_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GcSpec(_message.Message):
    __slots__ = ("target", "grace_seconds")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    GRACE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    target: TargetLocator
    grace_seconds: int
    def __init__(self, target: _Optional[_Union[TargetLocator, _Mapping]] = ..., grace_seconds: _Optional[int] = ...) -> None: ...

class RegisterNodeRequest(_message.Message):
    __slots__ = ("node_id", "hostname", "version", "max_tasks", "budget_bytes", "site", "transfer_address")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_TASKS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    hostname: str
    version: str
    max_tasks: int
    budget_bytes: int
    site: str
    transfer_address: str
    def __init__(self, node_id: _Optional[str] = ..., hostname: _Optional[str] = ..., version: _Optional[str] = ..., max_tasks: _Optional[int] = ..., budget_bytes: _Optional[int] = ..., site: _Optional[str] = ..., transfer_address: _Optional[str] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("node", "running_tasks", "inflight_bytes", "backpressure", "pairs", "tasks")
    NODE_FIELD_NUMBER: _ClassVar[int]
    RUNNING_TASKS_FIELD_NUMBER: _ClassVar[int]
    INFLIGHT_BYTES_FIELD_NUMBER: _ClassVar[int]
    BACKPRESSURE_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    node: str
    running_tasks: int
    inflight_bytes: int
    backpressure: float
    pairs: _containers.RepeatedCompositeFieldContainer[PairHealth]
    tasks: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node: _Optional[str] = ..., running_tasks: _Optional[int] = ..., inflight_bytes: _Optional[int] = ..., backpressure: _Optional[float] = ..., pairs: _Optional[_Iterable[_Union[PairHealth, _Mapping]]] = ..., tasks: _Optional[_Iterable[str]] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("lease_seconds",)
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    lease_seconds: int
    def __init__(self, lease_seconds: _Optional[int] = ...) -> None: ...

class AcquireTaskRequest(_message.Message):
    __slots__ = ("node", "wait_seconds")
    NODE_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    node: str
    wait_seconds: int
    def __init__(self, node: _Optional[str] = ..., wait_seconds: _Optional[int] = ...) -> None: ...

class AcquireTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class ReportProgressRequest(_message.Message):
    __slots__ = ("task", "lease_token", "checkpoint", "bytes_done", "stats", "full_sync")
    TASK_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    FULL_SYNC_FIELD_NUMBER: _ClassVar[int]
    task: str
    lease_token: int
    checkpoint: _common_pb2.Checkpoint
    bytes_done: int
    stats: _common_pb2.TransferStats
    full_sync: bool
    def __init__(self, task: _Optional[str] = ..., lease_token: _Optional[int] = ..., checkpoint: _Optional[_Union[_common_pb2.Checkpoint, _Mapping]] = ..., bytes_done: _Optional[int] = ..., stats: _Optional[_Union[_common_pb2.TransferStats, _Mapping]] = ..., full_sync: _Optional[bool] = ...) -> None: ...

class ReportProgressResponse(_message.Message):
    __slots__ = ("cancel", "bandwidth_bytes_per_second", "release")
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    cancel: bool
    bandwidth_bytes_per_second: int
    release: bool
    def __init__(self, cancel: _Optional[bool] = ..., bandwidth_bytes_per_second: _Optional[int] = ..., release: _Optional[bool] = ...) -> None: ...

class CompleteTaskRequest(_message.Message):
    __slots__ = ("task", "lease_token", "error", "stats", "root_hash", "full_sync", "size_bytes", "bitmap", "full_sync_reason", "restore_result", "verify_result", "gc_result", "snapshot_id", "source_snapshots")
    TASK_FIELD_NUMBER: _ClassVar[int]
    LEASE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    ROOT_HASH_FIELD_NUMBER: _ClassVar[int]
    FULL_SYNC_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    BITMAP_FIELD_NUMBER: _ClassVar[int]
    FULL_SYNC_REASON_FIELD_NUMBER: _ClassVar[int]
    RESTORE_RESULT_FIELD_NUMBER: _ClassVar[int]
    VERIFY_RESULT_FIELD_NUMBER: _ClassVar[int]
    GC_RESULT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    task: str
    lease_token: int
    error: _common_pb2.TaskError
    stats: _common_pb2.TransferStats
    root_hash: str
    full_sync: bool
    size_bytes: int
    bitmap: str
    full_sync_reason: str
    restore_result: _common_pb2.RestoreResult
    verify_result: _common_pb2.VerifyResult
    gc_result: _common_pb2.GcResult
    snapshot_id: str
    source_snapshots: _containers.RepeatedCompositeFieldContainer[SourceSnapshot]
    def __init__(self, task: _Optional[str] = ..., lease_token: _Optional[int] = ..., error: _Optional[_Union[_common_pb2.TaskError, _Mapping]] = ..., stats: _Optional[_Union[_common_pb2.TransferStats, _Mapping]] = ..., root_hash: _Optional[str] = ..., full_sync: _Optional[bool] = ..., size_bytes: _Optional[int] = ..., bitmap: _Optional[str] = ..., full_sync_reason: _Optional[str] = ..., restore_result: _Optional[_Union[_common_pb2.RestoreResult, _Mapping]] = ..., verify_result: _Optional[_Union[_common_pb2.VerifyResult, _Mapping]] = ..., gc_result: _Optional[_Union[_common_pb2.GcResult, _Mapping]] = ..., snapshot_id: _Optional[str] = ..., source_snapshots: _Optional[_Iterable[_Union[SourceSnapshot, _Mapping]]] = ...) -> None: ...

class CompleteTaskResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes", "next_page_token")
    NODES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    next_page_token: str
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DrainNodeRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UndrainNodeRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...
