"""The task store: transactions with history (seed pattern 2), idempotent create, DatabaseError."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from octollm_grpc.errors import DatabaseError, InvalidStateError, TaskNotFoundError
from server.store import Status, TaskStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TaskStore]:
    ticks = iter(range(1000, 2000))
    made = TaskStore(str(tmp_path / "tasks.db"), clock=lambda: float(next(ticks)))
    yield made
    made.close()


def test_create_writes_task_and_history_row(store: TaskStore) -> None:
    """A create stores a PENDING task and one history row in the same transaction."""
    record, created = store.create("summarise", 5, None, None)
    assert created
    assert store.get(record.task_id) == record
    assert record.status is Status.PENDING
    assert [(h.status, h.note) for h in store.history(record.task_id)] == [
        (Status.PENDING, "created")]


def test_create_with_same_request_id_returns_first_task(store: TaskStore) -> None:
    """A retried create (same request_id) returns the first task and writes nothing new."""
    first, created_first = store.create("summarise", 5, 30, "req-1")
    again, created_again = store.create("something else", 9, None, "req-1")
    assert (created_first, created_again) == (True, False)
    assert again == first
    tasks, more = store.page(0, 10)
    assert [t.task_id for t in tasks] == [first.task_id] and not more


def test_transition_records_history_and_bumps_version(store: TaskStore) -> None:
    """An allowed transition updates the row and appends its history entry."""
    record, _ = store.create("x", 1, None, None)
    running = store.transition(record.task_id, (Status.PENDING,), Status.RUNNING, note="go")
    done = store.transition(record.task_id, (Status.RUNNING,), Status.COMPLETED, result="ok")
    assert (running.version, done.version) == (2, 3)
    assert done.result == "ok" and done.status is Status.COMPLETED
    assert [h.status for h in store.history(record.task_id)] == [
        Status.PENDING, Status.RUNNING, Status.COMPLETED]


def test_transition_from_wrong_state_is_invalid_state_and_changes_nothing(
        store: TaskStore) -> None:
    """Cancelling a finished task raises InvalidStateError and leaves row and history alone."""
    record, _ = store.create("x", 1, None, None)
    store.transition(record.task_id, (Status.PENDING,), Status.CANCELLED)
    before = store.get(record.task_id)
    with pytest.raises(InvalidStateError) as raised:
        store.transition(record.task_id, (Status.PENDING, Status.RUNNING), Status.CANCELLED)
    assert raised.value.details["status"] == "CANCELLED"
    assert raised.value.details["subject"] == record.task_id
    assert store.get(record.task_id) == before
    assert len(store.history(record.task_id)) == 2


def test_unknown_task_is_task_not_found(store: TaskStore) -> None:
    """Transition and delete of an unknown id raise TaskNotFoundError with its id."""
    with pytest.raises(TaskNotFoundError) as raised:
        store.transition("nope", (Status.PENDING,), Status.RUNNING)
    assert raised.value.details["task_id"] == "nope"
    with pytest.raises(TaskNotFoundError):
        store.delete("nope")
    assert store.get("nope") is None


def test_failed_history_insert_rolls_back_the_task(store: TaskStore, tmp_path: Path) -> None:
    """When the history insert fails, the task insert is rolled back and DatabaseError raised."""
    raw = sqlite3.connect(tmp_path / "tasks.db")
    raw.execute("CREATE TRIGGER no_history BEFORE INSERT ON task_history "
                "BEGIN SELECT RAISE(ABORT, 'history is full'); END")
    raw.commit()
    raw.close()
    with capture_logs() as logs, pytest.raises(DatabaseError) as raised:
        store.create("x", 1, None, "req-9")
    # Callers get SQLite's result code; the driver's text (it can name tables) is logged only.
    assert raised.value.details == {"operation": "create", "error": "SQLITE_CONSTRAINT_TRIGGER"}
    assert [(e["event"], e["error"]) for e in logs] == [("store.failed", "history is full")]
    assert store.page(0, 10) == ([], False)


def test_unopenable_database_is_database_error(tmp_path: Path) -> None:
    """A path SQLite cannot open raises DatabaseError('open', ...), not sqlite3.Error."""
    with pytest.raises(DatabaseError) as raised:
        TaskStore(str(tmp_path))  # a directory
    assert raised.value.details["operation"] == "open"


def test_page_walks_in_creation_order(store: TaskStore) -> None:
    """page() returns tasks oldest first, limit at a time, and says when more follow."""
    ids = [store.create(f"t{i}", 1, None, None)[0].task_id for i in range(5)]
    first, more = store.page(0, 2)
    second, more2 = store.page(first[-1].seq, 2)
    third, more3 = store.page(second[-1].seq, 2)
    assert [t.task_id for t in first + second + third] == ids
    assert (more, more2, more3) == (True, True, False)


def test_fail_interrupted_marks_running_tasks_failed(store: TaskStore) -> None:
    """Tasks a crashed process left RUNNING become FAILED on the next start."""
    record, _ = store.create("x", 1, None, None)
    store.transition(record.task_id, (Status.PENDING,), Status.RUNNING)
    assert store.fail_interrupted() == [record.task_id]
    again = store.get(record.task_id)
    assert again is not None and again.status is Status.FAILED
    assert store.history(record.task_id)[-1].note == "interrupted by a restart"


def test_delete_removes_task_and_history(store: TaskStore) -> None:
    """delete() removes the row and, by cascade, its history."""
    record, _ = store.create("x", 1, None, None)
    store.delete(record.task_id)
    assert store.get(record.task_id) is None
    assert store.history(record.task_id) == []
