from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class CompleteRequest(_message.Message):
    __slots__ = ("task_id", "prompt", "priority")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    prompt: str
    priority: int
    def __init__(self, task_id: _Optional[str] = ..., prompt: _Optional[str] = ..., priority: _Optional[int] = ...) -> None: ...

class CompleteResponse(_message.Message):
    __slots__ = ("text", "arm_id", "tokens")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ARM_ID_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    text: str
    arm_id: str
    tokens: int
    def __init__(self, text: _Optional[str] = ..., arm_id: _Optional[str] = ..., tokens: _Optional[int] = ...) -> None: ...
