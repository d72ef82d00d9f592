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

class RecoveryPlan(_message.Message):
    __slots__ = ("name", "protection_plan", "boot_groups", "create_time", "recovery_site", "pre_scripts", "post_scripts", "failed_over_by")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROTECTION_PLAN_FIELD_NUMBER: _ClassVar[int]
    BOOT_GROUPS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_SITE_FIELD_NUMBER: _ClassVar[int]
    PRE_SCRIPTS_FIELD_NUMBER: _ClassVar[int]
    POST_SCRIPTS_FIELD_NUMBER: _ClassVar[int]
    FAILED_OVER_BY_FIELD_NUMBER: _ClassVar[int]
    name: str
    protection_plan: str
    boot_groups: _containers.RepeatedCompositeFieldContainer[BootGroup]
    create_time: _timestamp_pb2.Timestamp
    recovery_site: str
    pre_scripts: _containers.RepeatedCompositeFieldContainer[Script]
    post_scripts: _containers.RepeatedCompositeFieldContainer[Script]
    failed_over_by: str
    def __init__(self, name: _Optional[str] = ..., protection_plan: _Optional[str] = ..., boot_groups: _Optional[_Iterable[_Union[BootGroup, _Mapping]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., recovery_site: _Optional[str] = ..., pre_scripts: _Optional[_Iterable[_Union[Script, _Mapping]]] = ..., post_scripts: _Optional[_Iterable[_Union[Script, _Mapping]]] = ..., failed_over_by: _Optional[str] = ...) -> None: ...

class BootGroup(_message.Message):
    __slots__ = ("name", "workloads", "delay_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WORKLOADS_FIELD_NUMBER: _ClassVar[int]
    DELAY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    workloads: _containers.RepeatedCompositeFieldContainer[RecoveryWorkload]
    delay_seconds: int
    def __init__(self, name: _Optional[str] = ..., workloads: _Optional[_Iterable[_Union[RecoveryWorkload, _Mapping]]] = ..., delay_seconds: _Optional[int] = ...) -> None: ...

class ValidationCheck(_message.Message):
    __slots__ = ("kind", "host", "port", "url", "status", "body_contains", "command", "timeout_seconds", "retries", "interval_seconds")
    KIND_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    BODY_CONTAINS_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    host: str
    port: int
    url: str
    status: int
    body_contains: str
    command: str
    timeout_seconds: int
    retries: int
    interval_seconds: int
    def __init__(self, kind: _Optional[str] = ..., host: _Optional[str] = ..., port: _Optional[int] = ..., url: _Optional[str] = ..., status: _Optional[int] = ..., body_contains: _Optional[str] = ..., command: _Optional[str] = ..., timeout_seconds: _Optional[int] = ..., retries: _Optional[int] = ..., interval_seconds: _Optional[int] = ...) -> None: ...

class Script(_message.Message):
    __slots__ = ("command", "timeout_seconds")
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    command: str
    timeout_seconds: int
    def __init__(self, command: _Optional[str] = ..., timeout_seconds: _Optional[int] = ...) -> None: ...

class RecoveryWorkload(_message.Message):
    __slots__ = ("workload", "instance_type", "network_mapping", "tags", "vsphere", "azure", "kvm", "checks", "pre_scripts", "post_scripts")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    NETWORK_MAPPING_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    VSPHERE_FIELD_NUMBER: _ClassVar[int]
    AZURE_FIELD_NUMBER: _ClassVar[int]
    KVM_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    PRE_SCRIPTS_FIELD_NUMBER: _ClassVar[int]
    POST_SCRIPTS_FIELD_NUMBER: _ClassVar[int]
    workload: str
    instance_type: str
    network_mapping: NetworkMapping
    tags: _containers.ScalarMap[str, str]
    vsphere: VsphereWorkload
    azure: AzureWorkload
    kvm: KvmWorkload
    checks: _containers.RepeatedCompositeFieldContainer[ValidationCheck]
    pre_scripts: _containers.RepeatedCompositeFieldContainer[Script]
    post_scripts: _containers.RepeatedCompositeFieldContainer[Script]
    def __init__(self, workload: _Optional[str] = ..., instance_type: _Optional[str] = ..., network_mapping: _Optional[_Union[NetworkMapping, _Mapping]] = ..., tags: _Optional[_Mapping[str, str]] = ..., vsphere: _Optional[_Union[VsphereWorkload, _Mapping]] = ..., azure: _Optional[_Union[AzureWorkload, _Mapping]] = ..., kvm: _Optional[_Union[KvmWorkload, _Mapping]] = ..., checks: _Optional[_Iterable[_Union[ValidationCheck, _Mapping]]] = ..., pre_scripts: _Optional[_Iterable[_Union[Script, _Mapping]]] = ..., post_scripts: _Optional[_Iterable[_Union[Script, _Mapping]]] = ...) -> None: ...

class KvmWorkload(_message.Message):
    __slots__ = ("cpus", "memory_mib", "networks", "kernel", "initrd", "append", "accel", "wait_for")
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MIB_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    INITRD_FIELD_NUMBER: _ClassVar[int]
    APPEND_FIELD_NUMBER: _ClassVar[int]
    ACCEL_FIELD_NUMBER: _ClassVar[int]
    WAIT_FOR_FIELD_NUMBER: _ClassVar[int]
    cpus: int
    memory_mib: int
    networks: _containers.RepeatedCompositeFieldContainer[KvmNetwork]
    kernel: str
    initrd: str
    append: str
    accel: str
    wait_for: str
    def __init__(self, cpus: _Optional[int] = ..., memory_mib: _Optional[int] = ..., networks: _Optional[_Iterable[_Union[KvmNetwork, _Mapping]]] = ..., kernel: _Optional[str] = ..., initrd: _Optional[str] = ..., append: _Optional[str] = ..., accel: _Optional[str] = ..., wait_for: _Optional[str] = ...) -> None: ...

class KvmNetwork(_message.Message):
    __slots__ = ("source", "network", "forwards")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    FORWARDS_FIELD_NUMBER: _ClassVar[int]
    source: str
    network: str
    forwards: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, source: _Optional[str] = ..., network: _Optional[str] = ..., forwards: _Optional[_Iterable[str]] = ...) -> None: ...

class AzureWorkload(_message.Message):
    __slots__ = ("vm_size", "subnet_id", "network_security_group_id", "private_ip", "test_subnet_id", "os_type", "disk_sku")
    VM_SIZE_FIELD_NUMBER: _ClassVar[int]
    SUBNET_ID_FIELD_NUMBER: _ClassVar[int]
    NETWORK_SECURITY_GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_IP_FIELD_NUMBER: _ClassVar[int]
    TEST_SUBNET_ID_FIELD_NUMBER: _ClassVar[int]
    OS_TYPE_FIELD_NUMBER: _ClassVar[int]
    DISK_SKU_FIELD_NUMBER: _ClassVar[int]
    vm_size: str
    subnet_id: str
    network_security_group_id: str
    private_ip: str
    test_subnet_id: str
    os_type: str
    disk_sku: str
    def __init__(self, vm_size: _Optional[str] = ..., subnet_id: _Optional[str] = ..., network_security_group_id: _Optional[str] = ..., private_ip: _Optional[str] = ..., test_subnet_id: _Optional[str] = ..., os_type: _Optional[str] = ..., disk_sku: _Optional[str] = ...) -> None: ...

class VsphereWorkload(_message.Message):
    __slots__ = ("cpus", "memory_mib", "datastore", "folder", "resource_pool", "networks", "isolated_port_group", "guest_id", "wait_for")
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MIB_FIELD_NUMBER: _ClassVar[int]
    DATASTORE_FIELD_NUMBER: _ClassVar[int]
    FOLDER_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_POOL_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    ISOLATED_PORT_GROUP_FIELD_NUMBER: _ClassVar[int]
    GUEST_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_FOR_FIELD_NUMBER: _ClassVar[int]
    cpus: int
    memory_mib: int
    datastore: str
    folder: str
    resource_pool: str
    networks: _containers.RepeatedCompositeFieldContainer[PortGroupMapping]
    isolated_port_group: str
    guest_id: str
    wait_for: str
    def __init__(self, cpus: _Optional[int] = ..., memory_mib: _Optional[int] = ..., datastore: _Optional[str] = ..., folder: _Optional[str] = ..., resource_pool: _Optional[str] = ..., networks: _Optional[_Iterable[_Union[PortGroupMapping, _Mapping]]] = ..., isolated_port_group: _Optional[str] = ..., guest_id: _Optional[str] = ..., wait_for: _Optional[str] = ...) -> None: ...

class PortGroupMapping(_message.Message):
    __slots__ = ("source", "port_group")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PORT_GROUP_FIELD_NUMBER: _ClassVar[int]
    source: str
    port_group: str
    def __init__(self, source: _Optional[str] = ..., port_group: _Optional[str] = ...) -> None: ...

class NetworkMapping(_message.Message):
    __slots__ = ("subnet_id", "security_group_ids", "private_ip")
    SUBNET_ID_FIELD_NUMBER: _ClassVar[int]
    SECURITY_GROUP_IDS_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_IP_FIELD_NUMBER: _ClassVar[int]
    subnet_id: str
    security_group_ids: _containers.RepeatedScalarFieldContainer[str]
    private_ip: str
    def __init__(self, subnet_id: _Optional[str] = ..., security_group_ids: _Optional[_Iterable[str]] = ..., private_ip: _Optional[str] = ...) -> None: ...

class Execution(_message.Message):
    __slots__ = ("name", "recovery_point", "mode", "state", "events", "instances", "error", "create_time", "end_time", "done", "workloads", "cancel_requested", "expire_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_POINT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    WORKLOADS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    recovery_point: str
    mode: str
    state: str
    events: _containers.RepeatedCompositeFieldContainer[ExecutionEvent]
    instances: _containers.RepeatedCompositeFieldContainer[RecoveredInstance]
    error: _common_pb2.TaskError
    create_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    done: bool
    workloads: _containers.RepeatedCompositeFieldContainer[WorkloadResult]
    cancel_requested: bool
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., recovery_point: _Optional[str] = ..., mode: _Optional[str] = ..., state: _Optional[str] = ..., events: _Optional[_Iterable[_Union[ExecutionEvent, _Mapping]]] = ..., instances: _Optional[_Iterable[_Union[RecoveredInstance, _Mapping]]] = ..., error: _Optional[_Union[_common_pb2.TaskError, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., done: _Optional[bool] = ..., workloads: _Optional[_Iterable[_Union[WorkloadResult, _Mapping]]] = ..., cancel_requested: _Optional[bool] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WorkloadResult(_message.Message):
    __slots__ = ("workload", "group", "state", "checks", "reason")
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    workload: str
    group: str
    state: str
    checks: _containers.RepeatedCompositeFieldContainer[CheckResult]
    reason: str
    def __init__(self, workload: _Optional[str] = ..., group: _Optional[str] = ..., state: _Optional[str] = ..., checks: _Optional[_Iterable[_Union[CheckResult, _Mapping]]] = ..., reason: _Optional[str] = ...) -> None: ...

class CheckResult(_message.Message):
    __slots__ = ("check", "passed", "detail", "attempts", "seconds")
    CHECK_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    check: str
    passed: bool
    detail: str
    attempts: int
    seconds: float
    def __init__(self, check: _Optional[str] = ..., passed: _Optional[bool] = ..., detail: _Optional[str] = ..., attempts: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class ExecutionEvent(_message.Message):
    __slots__ = ("time", "group", "workload", "step", "detail")
    TIME_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    group: str
    workload: str
    step: str
    detail: str
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., group: _Optional[str] = ..., workload: _Optional[str] = ..., step: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class RecoveredInstance(_message.Message):
    __slots__ = ("workload", "instance_id", "private_ip", "state", "volume_ids", "image_id", "address")
    WORKLOAD_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    PRIVATE_IP_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VOLUME_IDS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    workload: str
    instance_id: str
    private_ip: str
    state: str
    volume_ids: _containers.RepeatedScalarFieldContainer[str]
    image_id: str
    address: str
    def __init__(self, workload: _Optional[str] = ..., instance_id: _Optional[str] = ..., private_ip: _Optional[str] = ..., state: _Optional[str] = ..., volume_ids: _Optional[_Iterable[str]] = ..., image_id: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class CreateRecoveryPlanRequest(_message.Message):
    __slots__ = ("recovery_plan_id", "recovery_plan")
    RECOVERY_PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_PLAN_FIELD_NUMBER: _ClassVar[int]
    recovery_plan_id: str
    recovery_plan: RecoveryPlan
    def __init__(self, recovery_plan_id: _Optional[str] = ..., recovery_plan: _Optional[_Union[RecoveryPlan, _Mapping]] = ...) -> None: ...

class GetRecoveryPlanRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListRecoveryPlansRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRecoveryPlansResponse(_message.Message):
    __slots__ = ("recovery_plans", "next_page_token")
    RECOVERY_PLANS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    recovery_plans: _containers.RepeatedCompositeFieldContainer[RecoveryPlan]
    next_page_token: str
    def __init__(self, recovery_plans: _Optional[_Iterable[_Union[RecoveryPlan, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteRecoveryPlanRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class StartRecoveryRequest(_message.Message):
    __slots__ = ("name", "recovery_point", "mode", "ttl_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_POINT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    recovery_point: str
    mode: str
    ttl_seconds: int
    def __init__(self, name: _Optional[str] = ..., recovery_point: _Optional[str] = ..., mode: _Optional[str] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class GetExecutionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListExecutionsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListExecutionsResponse(_message.Message):
    __slots__ = ("executions", "next_page_token")
    EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    executions: _containers.RepeatedCompositeFieldContainer[Execution]
    next_page_token: str
    def __init__(self, executions: _Optional[_Iterable[_Union[Execution, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CleanupExecutionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CancelExecutionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RefreshExecutionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ForecastRecoveryPlanRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RtoForecast(_message.Message):
    __slots__ = ("recovery_plan", "rto_seconds", "restore_seconds", "provider_seconds", "validation_seconds", "script_seconds", "delay_seconds", "overhead_seconds", "throughput_bytes_per_second", "basis", "last_measured_rto_seconds", "last_execution", "restore_bytes")
    RECOVERY_PLAN_FIELD_NUMBER: _ClassVar[int]
    RTO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RESTORE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SCRIPT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DELAY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OVERHEAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    BASIS_FIELD_NUMBER: _ClassVar[int]
    LAST_MEASURED_RTO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LAST_EXECUTION_FIELD_NUMBER: _ClassVar[int]
    RESTORE_BYTES_FIELD_NUMBER: _ClassVar[int]
    recovery_plan: str
    rto_seconds: float
    restore_seconds: float
    provider_seconds: float
    validation_seconds: float
    script_seconds: float
    delay_seconds: float
    overhead_seconds: float
    throughput_bytes_per_second: float
    basis: str
    last_measured_rto_seconds: float
    last_execution: str
    restore_bytes: int
    def __init__(self, recovery_plan: _Optional[str] = ..., rto_seconds: _Optional[float] = ..., restore_seconds: _Optional[float] = ..., provider_seconds: _Optional[float] = ..., validation_seconds: _Optional[float] = ..., script_seconds: _Optional[float] = ..., delay_seconds: _Optional[float] = ..., overhead_seconds: _Optional[float] = ..., throughput_bytes_per_second: _Optional[float] = ..., basis: _Optional[str] = ..., last_measured_rto_seconds: _Optional[float] = ..., last_execution: _Optional[str] = ..., restore_bytes: _Optional[int] = ...) -> None: ...
