import datetime

from dr_common.proto.dr.v1 import common_pb2 as _common_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Plan(_message.Message):
    __slots__ = ("name", "source_site", "target_site", "target_kind", "workloads", "disks", "rpo_seconds", "keep_last", "chunk_size_bytes", "compression", "state", "paused", "create_time", "bandwidth_bytes_per_second", "retention", "quiesce")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SITE_FIELD_NUMBER: _ClassVar[int]
    TARGET_SITE_FIELD_NUMBER: _ClassVar[int]
    TARGET_KIND_FIELD_NUMBER: _ClassVar[int]
    WORKLOADS_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    RPO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    KEEP_LAST_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    RETENTION_FIELD_NUMBER: _ClassVar[int]
    QUIESCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    source_site: str
    target_site: str
    target_kind: str
    workloads: _containers.RepeatedScalarFieldContainer[str]
    disks: _containers.RepeatedScalarFieldContainer[str]
    rpo_seconds: int
    keep_last: int
    chunk_size_bytes: int
    compression: str
    state: str
    paused: bool
    create_time: _timestamp_pb2.Timestamp
    bandwidth_bytes_per_second: int
    retention: Retention
    quiesce: bool
    def __init__(self, name: _Optional[str] = ..., source_site: _Optional[str] = ..., target_site: _Optional[str] = ..., target_kind: _Optional[str] = ..., workloads: _Optional[_Iterable[str]] = ..., disks: _Optional[_Iterable[str]] = ..., rpo_seconds: _Optional[int] = ..., keep_last: _Optional[int] = ..., chunk_size_bytes: _Optional[int] = ..., compression: _Optional[str] = ..., state: _Optional[str] = ..., paused: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., bandwidth_bytes_per_second: _Optional[int] = ..., retention: _Optional[_Union[Retention, _Mapping]] = ..., quiesce: _Optional[bool] = ...) -> None: ...

class Retention(_message.Message):
    __slots__ = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly")
    KEEP_LAST_FIELD_NUMBER: _ClassVar[int]
    KEEP_HOURLY_FIELD_NUMBER: _ClassVar[int]
    KEEP_DAILY_FIELD_NUMBER: _ClassVar[int]
    KEEP_WEEKLY_FIELD_NUMBER: _ClassVar[int]
    keep_last: int
    keep_hourly: int
    keep_daily: int
    keep_weekly: int
    def __init__(self, keep_last: _Optional[int] = ..., keep_hourly: _Optional[int] = ..., keep_daily: _Optional[int] = ..., keep_weekly: _Optional[int] = ...) -> None: ...

class Cycle(_message.Message):
    __slots__ = ("name", "state", "create_time", "end_time", "recovery_point", "stats", "disks", "error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_POINT_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: str
    create_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    recovery_point: str
    stats: _common_pb2.TransferStats
    disks: _containers.RepeatedCompositeFieldContainer[DiskProgress]
    error: _common_pb2.TaskError
    def __init__(self, name: _Optional[str] = ..., state: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., recovery_point: _Optional[str] = ..., stats: _Optional[_Union[_common_pb2.TransferStats, _Mapping]] = ..., disks: _Optional[_Iterable[_Union[DiskProgress, _Mapping]]] = ..., error: _Optional[_Union[_common_pb2.TaskError, _Mapping]] = ...) -> None: ...

class DiskProgress(_message.Message):
    __slots__ = ("disk", "state", "size_bytes", "watermark_bytes", "full_sync", "stats", "message")
    DISK_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    WATERMARK_BYTES_FIELD_NUMBER: _ClassVar[int]
    FULL_SYNC_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    disk: str
    state: str
    size_bytes: int
    watermark_bytes: int
    full_sync: bool
    stats: _common_pb2.TransferStats
    message: str
    def __init__(self, disk: _Optional[str] = ..., state: _Optional[str] = ..., size_bytes: _Optional[int] = ..., watermark_bytes: _Optional[int] = ..., full_sync: _Optional[bool] = ..., stats: _Optional[_Union[_common_pb2.TransferStats, _Mapping]] = ..., message: _Optional[str] = ...) -> None: ...

class DiskStatus(_message.Message):
    __slots__ = ("disk", "state")
    DISK_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    disk: str
    state: str
    def __init__(self, disk: _Optional[str] = ..., state: _Optional[str] = ...) -> None: ...

class PlanStatus(_message.Message):
    __slots__ = ("plan", "last_recovery_point", "last_recovery_point_time", "rpo_lag_seconds", "rpo_met", "disks", "in_sync_count", "current_cycle")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    LAST_RECOVERY_POINT_FIELD_NUMBER: _ClassVar[int]
    LAST_RECOVERY_POINT_TIME_FIELD_NUMBER: _ClassVar[int]
    RPO_LAG_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RPO_MET_FIELD_NUMBER: _ClassVar[int]
    DISKS_FIELD_NUMBER: _ClassVar[int]
    IN_SYNC_COUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENT_CYCLE_FIELD_NUMBER: _ClassVar[int]
    plan: Plan
    last_recovery_point: str
    last_recovery_point_time: _timestamp_pb2.Timestamp
    rpo_lag_seconds: float
    rpo_met: bool
    disks: _containers.RepeatedCompositeFieldContainer[DiskStatus]
    in_sync_count: int
    current_cycle: Cycle
    def __init__(self, plan: _Optional[_Union[Plan, _Mapping]] = ..., last_recovery_point: _Optional[str] = ..., last_recovery_point_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rpo_lag_seconds: _Optional[float] = ..., rpo_met: _Optional[bool] = ..., disks: _Optional[_Iterable[_Union[DiskStatus, _Mapping]]] = ..., in_sync_count: _Optional[int] = ..., current_cycle: _Optional[_Union[Cycle, _Mapping]] = ...) -> None: ...

class CreatePlanRequest(_message.Message):
    __slots__ = ("plan_id", "plan")
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    plan_id: str
    plan: Plan
    def __init__(self, plan_id: _Optional[str] = ..., plan: _Optional[_Union[Plan, _Mapping]] = ...) -> None: ...

class GetPlanRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListPlansRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPlansResponse(_message.Message):
    __slots__ = ("plans", "next_page_token")
    PLANS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    plans: _containers.RepeatedCompositeFieldContainer[Plan]
    next_page_token: str
    def __init__(self, plans: _Optional[_Iterable[_Union[Plan, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdatePlanRequest(_message.Message):
    __slots__ = ("plan", "update_mask")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    plan: Plan
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, plan: _Optional[_Union[Plan, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class DeletePlanRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class PausePlanRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ResumePlanRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RunPlanRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetPlanStatusRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListCyclesRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCyclesResponse(_message.Message):
    __slots__ = ("cycles", "next_page_token")
    CYCLES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    cycles: _containers.RepeatedCompositeFieldContainer[Cycle]
    next_page_token: str
    def __init__(self, cycles: _Optional[_Iterable[_Union[Cycle, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetRpoReportRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RpoReport(_message.Message):
    __slots__ = ("report_time", "plans", "met_count", "breached_count")
    REPORT_TIME_FIELD_NUMBER: _ClassVar[int]
    PLANS_FIELD_NUMBER: _ClassVar[int]
    MET_COUNT_FIELD_NUMBER: _ClassVar[int]
    BREACHED_COUNT_FIELD_NUMBER: _ClassVar[int]
    report_time: _timestamp_pb2.Timestamp
    plans: _containers.RepeatedCompositeFieldContainer[PlanRpo]
    met_count: int
    breached_count: int
    def __init__(self, report_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., plans: _Optional[_Iterable[_Union[PlanRpo, _Mapping]]] = ..., met_count: _Optional[int] = ..., breached_count: _Optional[int] = ...) -> None: ...

class PlanRpo(_message.Message):
    __slots__ = ("plan", "rpo_seconds", "last_recovery_point", "last_recovery_point_time", "recovery_point_age_seconds", "rpo_lag_seconds", "rpo_met", "in_sync_count", "disk_count", "state", "paused")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    RPO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LAST_RECOVERY_POINT_FIELD_NUMBER: _ClassVar[int]
    LAST_RECOVERY_POINT_TIME_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_POINT_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RPO_LAG_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RPO_MET_FIELD_NUMBER: _ClassVar[int]
    IN_SYNC_COUNT_FIELD_NUMBER: _ClassVar[int]
    DISK_COUNT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    plan: str
    rpo_seconds: int
    last_recovery_point: str
    last_recovery_point_time: _timestamp_pb2.Timestamp
    recovery_point_age_seconds: float
    rpo_lag_seconds: float
    rpo_met: bool
    in_sync_count: int
    disk_count: int
    state: str
    paused: bool
    def __init__(self, plan: _Optional[str] = ..., rpo_seconds: _Optional[int] = ..., last_recovery_point: _Optional[str] = ..., last_recovery_point_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., recovery_point_age_seconds: _Optional[float] = ..., rpo_lag_seconds: _Optional[float] = ..., rpo_met: _Optional[bool] = ..., in_sync_count: _Optional[int] = ..., disk_count: _Optional[int] = ..., state: _Optional[str] = ..., paused: _Optional[bool] = ...) -> None: ...
