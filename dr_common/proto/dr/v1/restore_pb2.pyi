from dr_common.proto.dr.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class RestoreDiskRequest(_message.Message):
    __slots__ = ("recovery_point", "disk", "destination_path", "format", "overwrite", "availability_zone")
    RECOVERY_POINT_FIELD_NUMBER: _ClassVar[int]
    DISK_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_PATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    AVAILABILITY_ZONE_FIELD_NUMBER: _ClassVar[int]
    recovery_point: str
    disk: str
    destination_path: str
    format: str
    overwrite: bool
    availability_zone: str
    def __init__(self, recovery_point: _Optional[str] = ..., disk: _Optional[str] = ..., destination_path: _Optional[str] = ..., format: _Optional[str] = ..., overwrite: _Optional[bool] = ..., availability_zone: _Optional[str] = ...) -> None: ...
