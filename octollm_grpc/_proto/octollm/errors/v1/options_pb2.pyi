from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.rpc import code_pb2 as _code_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
DOMAIN_FIELD_NUMBER: _ClassVar[int]
domain: _descriptor.FieldDescriptor
ERROR_FIELD_NUMBER: _ClassVar[int]
error: _descriptor.FieldDescriptor

class ErrorSpec(_message.Message):
    __slots__ = ("code", "http_status", "message", "retryable")
    CODE_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    code: _code_pb2.Code
    http_status: int
    message: str
    retryable: bool
    def __init__(self, code: _Optional[_Union[_code_pb2.Code, str]] = ..., http_status: _Optional[int] = ..., message: _Optional[str] = ..., retryable: bool = ...) -> None: ...
