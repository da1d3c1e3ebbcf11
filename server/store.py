"""SQLite storage for tasks: every write is one transaction with its ``task_history`` row.

The seed's pattern 2: a write and its history entry commit together or not at all; any
``sqlite3.Error`` rolls the transaction back and surfaces as :class:`DatabaseError`, whose text
(it reaches clients) is SQLite's result code name only: the driver's own message can name files,
tables and constraints, so it goes to the log instead.
``TaskStore`` is synchronous and owns one connection; callers on an event loop run it on one
dedicated thread (see :class:`server.service.TaskServicer`), which also serialises writes.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog

from octollm_grpc.errors import DatabaseError, TaskNotFoundError
from server.gen.octollm.tasks.v1.reasons_errors import TaskStateConflictError

__all__ = ["HistoryEntry", "Status", "TaskRecord", "TaskStore"]


class Status(StrEnum):
    """A task's status, as stored (the proto's ``TASK_STATUS_*`` without the prefix)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        """True once nothing more will happen to the task by itself."""
        return self in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One row of ``tasks``. ``version`` grows by one on every change."""

    seq: int
    task_id: str
    description: str
    priority: int
    timeout_seconds: int | None
    status: Status
    request_id: str | None
    result: str
    error: bytes | None
    """A serialized ``google.rpc.Status``: why the last execution failed."""
    create_time: float
    update_time: float
    version: int


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One row of ``task_history``."""

    status: Status
    time: float
    note: str


_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id         TEXT    NOT NULL UNIQUE,
    description     TEXT    NOT NULL,
    priority        INTEGER NOT NULL,
    timeout_seconds INTEGER,
    status          TEXT    NOT NULL,
    request_id      TEXT,
    result          TEXT    NOT NULL DEFAULT '',
    error           BLOB,
    create_time     REAL    NOT NULL,
    update_time     REAL    NOT NULL,
    version         INTEGER NOT NULL DEFAULT 1
);
-- The idempotency key: a retried create finds the first one's row instead of adding one.
CREATE UNIQUE INDEX IF NOT EXISTS tasks_request_id ON tasks(request_id)
    WHERE request_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS task_history (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT    NOT NULL REFERENCES tasks(task_id) ON DELETE CASCADE,
    status  TEXT    NOT NULL,
    time    REAL    NOT NULL,
    note    TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS task_history_task ON task_history(task_id, id);
"""

log = structlog.get_logger("server.store")


def _database_error(operation: str, error: sqlite3.Error) -> DatabaseError:
    """The :class:`DatabaseError` callers may see for ``error``; its full text is logged."""
    code = getattr(error, "sqlite_errorname", None) or "SQLITE_ERROR"
    log.error("store.failed", operation=operation, sqlite_code=code, error=str(error))
    return DatabaseError(operation, sqlite3.Error(code))


# Rows are read with SELECT * and unpacked in the schema's column order (see _record).


def _record(row: tuple[Any, ...]) -> TaskRecord:
    (seq, task_id, description, priority, timeout, status, request_id, result, error,
     created, updated, version) = row
    return TaskRecord(
        seq=int(seq),
        task_id=str(task_id),
        description=str(description),
        priority=int(priority),
        timeout_seconds=None if timeout is None else int(timeout),
        status=Status(str(status)),
        request_id=None if request_id is None else str(request_id),
        result=str(result),
        error=None if error is None else bytes(error),
        create_time=float(created),
        update_time=float(updated),
        version=int(version),
    )


class TaskStore:
    """Tasks and their history in one SQLite file (or ``":memory:"``).

    Not thread-safe: use it from one thread at a time. Every method raises
    :class:`DatabaseError` when SQLite fails, after rolling back what it had started.
    """

    def __init__(self, path: str, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        try:
            # Autocommit mode: transactions are begun explicitly (BEGIN IMMEDIATE) below.
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.execute("PRAGMA busy_timeout = 5000")
            if path != ":memory:":
                # WAL: readers (another process inspecting the file) never block the writer.
                self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as error:
            # Startup only, never on the wire: the operator needs the driver's words here.
            raise DatabaseError("open", error) from error

    def close(self) -> None:
        """Close the connection; committed writes are already on disk."""
        self._conn.close()

    @contextlib.contextmanager
    def _transaction(self, operation: str) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed on success, rolled back on any exception."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            raise _database_error(operation, error) from error
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as failure:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(failure, sqlite3.Error):
                raise _database_error(operation, failure) from failure
            raise

    def _read(self, operation: str, sql: str, args: tuple[object, ...]) -> list[tuple[Any, ...]]:
        try:
            return list(self._conn.execute(sql, args).fetchall())
        except sqlite3.Error as error:
            raise _database_error(operation, error) from error

    @staticmethod
    def _history(conn: sqlite3.Connection, task_id: str, status: Status, now: float,
                 note: str) -> None:
        conn.execute("INSERT INTO task_history (task_id, status, time, note) VALUES (?, ?, ?, ?)",
                     (task_id, status.value, now, note))

    # -- writes ---------------------------------------------------------------------------

    def create(self, description: str, priority: int, timeout_seconds: int | None,
               request_id: str | None) -> tuple[TaskRecord, bool]:
        """Store a PENDING task; return it and whether it is new.

        With a ``request_id`` already used, nothing is written and the existing task is
        returned with ``False``: a client's retry never creates a second task.
        """
        with self._transaction("create") as conn:
            if request_id:
                row = conn.execute("SELECT * FROM tasks WHERE request_id = ?",
                                   (request_id,)).fetchone()
                if row is not None:
                    return _record(row), False
            now = self._clock()
            task_id = str(uuid.uuid4())
            conn.execute(
                "INSERT INTO tasks (task_id, description, priority, timeout_seconds, status, "
                "request_id, create_time, update_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (task_id, description, priority, timeout_seconds, Status.PENDING.value,
                 request_id or None, now, now))
            self._history(conn, task_id, Status.PENDING, now, "created")
            row = conn.execute("SELECT * FROM tasks WHERE task_id = ?",
                               (task_id,)).fetchone()
            return _record(row), True

    def transition(self, task_id: str, allowed_from: Collection[Status], to: Status, *,
                   note: str = "", result: str | None = None,
                   error: bytes | None = None) -> TaskRecord:
        """Move a task to ``to`` if its status is one of ``allowed_from``; return it after.

        Raises :class:`TaskNotFoundError` for an unknown id and :class:`TaskStateConflictError`
        (declared in ``reasons.proto``; an ``InvalidStateError``, ``FAILED_PRECONDITION``)
        when the task is in another status. ``error`` is stored on
        FAILED and cleared otherwise; ``result`` is kept unless given.
        """
        with self._transaction("update") as conn:
            row = conn.execute("SELECT * FROM tasks WHERE task_id = ?",
                               (task_id,)).fetchone()
            if row is None:
                raise TaskNotFoundError(task_id)
            current = _record(row)
            if current.status not in allowed_from:
                raise TaskStateConflictError(
                    subject=task_id, status=current.status.value, requested=to.value)
            now = self._clock()
            conn.execute(
                "UPDATE tasks SET status = ?, result = ?, error = ?, update_time = ?, "
                "version = version + 1 WHERE task_id = ?",
                (to.value, current.result if result is None else result, error, now, task_id))
            self._history(conn, task_id, to, now, note)
            row = conn.execute("SELECT * FROM tasks WHERE task_id = ?",
                               (task_id,)).fetchone()
            return _record(row)

    def delete(self, task_id: str) -> None:
        """Remove a task and its history; :class:`TaskNotFoundError` if it does not exist."""
        with self._transaction("delete") as conn:
            if conn.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,)).rowcount == 0:
                raise TaskNotFoundError(task_id)

    def fail_interrupted(self) -> list[str]:
        """Mark tasks left RUNNING by an earlier process as FAILED; return their ids."""
        with self._transaction("recover") as conn:
            ids = [str(r[0]) for r in conn.execute(
                "SELECT task_id FROM tasks WHERE status = ?", (Status.RUNNING.value,))]
            now = self._clock()
            for task_id in ids:
                conn.execute("UPDATE tasks SET status = ?, update_time = ?, version = version + 1 "
                             "WHERE task_id = ?", (Status.FAILED.value, now, task_id))
                self._history(conn, task_id, Status.FAILED, now, "interrupted by a restart")
            return ids

    # -- reads ----------------------------------------------------------------------------

    def get(self, task_id: str) -> TaskRecord | None:
        """The task, or ``None`` if there is none with this id."""
        rows = self._read("query", "SELECT * FROM tasks WHERE task_id = ?", (task_id,))
        return _record(rows[0]) if rows else None

    def history(self, task_id: str) -> list[HistoryEntry]:
        """The task's history, oldest first (empty for an unknown id)."""
        rows = self._read("query", "SELECT status, time, note FROM task_history "
                                   "WHERE task_id = ? ORDER BY id", (task_id,))
        return [HistoryEntry(Status(str(s)), float(t), str(n))
                for s, t, n in rows]

    def page(self, after_seq: int, limit: int, max_bytes: int | None = None,
             size: Callable[[TaskRecord], int] = lambda record: 0,
             ) -> tuple[list[TaskRecord], bool]:
        """Up to ``limit`` tasks after ``after_seq``, oldest first, and whether more follow.

        With ``max_bytes``, the page also ends before the task that would take the sum of
        ``size(task)`` past it (the first task is always included, so a page is never empty
        while tasks remain). Rows are read one batch at a time: a page's memory is bounded by
        ``max_bytes``, not by ``limit`` times the largest task.
        """
        try:
            cursor = self._conn.execute("SELECT * FROM tasks WHERE seq > ? ORDER BY seq "
                                        "LIMIT ?", (after_seq, limit + 1))
            try:
                records: list[TaskRecord] = []
                used = 0
                while rows := cursor.fetchmany(32):
                    for row in rows:
                        record = _record(row)
                        if len(records) == limit:
                            return records, True
                        used += size(record)
                        if records and max_bytes is not None and used > max_bytes:
                            return records, True
                        records.append(record)
                return records, False
            finally:
                cursor.close()  # a half-read statement would hold its read snapshot open
        except sqlite3.Error as error:
            raise _database_error("query", error) from error
