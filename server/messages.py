"""Stored records <-> protobuf messages, and the opaque ``ListTasks`` page token."""

from __future__ import annotations

import base64
import binascii
import contextlib

from google.protobuf import timestamp_pb2
from google.rpc import status_pb2

from server.gen.octollm.tasks.v1 import tasks_pb2
from server.gen.octollm.tasks.v1.reasons_errors import InvalidPageTokenError
from server.store import HistoryEntry, Status, TaskRecord

__all__ = ["MAX_SEQ", "decode_page_token", "encode_page_token", "history_message", "status_enum",
           "task_message"]

_PREFIX = "after:"
#: The largest position a token can name: SQLite's largest INTEGER.
MAX_SEQ = 2**63 - 1
_MAX_DIGITS = len(str(MAX_SEQ))
#: The longest token :func:`encode_page_token` gives; longer ones are not even decoded.
_MAX_TOKEN = len(base64.urlsafe_b64encode(f"{_PREFIX}{MAX_SEQ}".encode()))


_STATUS = {
    Status.PENDING: tasks_pb2.TASK_STATUS_PENDING,
    Status.RUNNING: tasks_pb2.TASK_STATUS_RUNNING,
    Status.COMPLETED: tasks_pb2.TASK_STATUS_COMPLETED,
    Status.FAILED: tasks_pb2.TASK_STATUS_FAILED,
    Status.CANCELLED: tasks_pb2.TASK_STATUS_CANCELLED,
}


def status_enum(status: Status) -> tasks_pb2.TaskStatus:
    """The proto enum value for a stored status."""
    return _STATUS[status]


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(round(seconds * 1e6))  # microseconds: what a float time holds
    return stamp


def task_message(record: TaskRecord) -> tasks_pb2.Task:
    """The ``Task`` message for a stored task."""
    task = tasks_pb2.Task(
        task_id=record.task_id,
        description=record.description,
        priority=record.priority,
        status=status_enum(record.status),
        request_id=record.request_id or "",
        result=record.result,
        create_time=_timestamp(record.create_time),
        update_time=_timestamp(record.update_time),
    )
    if record.timeout_seconds is not None:
        task.timeout_seconds = record.timeout_seconds
    if record.error is not None and record.status is Status.FAILED:
        task.error.CopyFrom(status_pb2.Status.FromString(record.error))
    return task


def history_message(entry: HistoryEntry) -> tasks_pb2.TaskHistoryEntry:
    """The ``TaskHistoryEntry`` message for one history row."""
    return tasks_pb2.TaskHistoryEntry(status=status_enum(entry.status),
                                      time=_timestamp(entry.time), note=entry.note)


def encode_page_token(after_seq: int) -> str:
    """An opaque token for "the tasks after this one" (``0 <= after_seq <= MAX_SEQ``)."""
    return base64.urlsafe_b64encode(f"{_PREFIX}{after_seq}".encode()).decode().rstrip("=")


def decode_page_token(token: str) -> int:
    """The position a token stands for (0 for ""); :class:`InvalidPageTokenError` (declared in
    ``reasons.proto``) if it is not ours.

    Strict: a token is ours only if it is exactly what :func:`encode_page_token` gives for a
    position within SQLite's integer range, so a forged one (signs, spaces, other digits,
    non-canonical base64, a 400-digit number) never reaches the query.
    """
    if not token:
        return 0
    if len(token) <= _MAX_TOKEN:
        with contextlib.suppress(binascii.Error, UnicodeDecodeError, ValueError):
            text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
            digits = text.removeprefix(_PREFIX)
            if text.startswith(_PREFIX) and digits.isascii() and digits.isdigit() \
                    and len(digits) <= _MAX_DIGITS:
                value = int(digits)
                if value <= MAX_SEQ and encode_page_token(value) == token:
                    return value
    raise InvalidPageTokenError(field="page_token")
