"""database_transaction: commit or roll back a real sqlite3 database, driver errors mapped."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from structlog.testing import capture_logs

from octollm_grpc import errors
from octollm_grpc.resilience import database_transaction

T = TypeVar("T")


class Database:
    """A sqlite3 file whose connection lives in one worker thread (as sqlite3 requires)."""

    def __init__(self, executor: ThreadPoolExecutor, conn: sqlite3.Connection) -> None:
        self.executor = executor
        self.conn = conn

    async def run(self, func: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, func)

    async def execute(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return await self.run(lambda: self.conn.execute(sql, params).fetchall())

    def transaction(self, **kwargs: Any) -> Any:
        return database_transaction(self.conn, run=self.run,
                                    driver_errors=(sqlite3.Error,), **kwargs)


@asynccontextmanager
async def open_db(path: Path) -> AsyncIterator[Database]:
    executor = ThreadPoolExecutor(max_workers=1)
    loop = asyncio.get_running_loop()
    conn = await loop.run_in_executor(executor, sqlite3.connect, str(path))
    db = Database(executor, conn)
    await db.execute("CREATE TABLE tasks (id TEXT PRIMARY KEY, status TEXT NOT NULL)")
    await db.execute("CREATE TABLE task_history (task_id TEXT, status TEXT)")
    await db.run(conn.commit)
    try:
        yield db
    finally:
        await db.run(conn.close)
        executor.shutdown()


async def test_commits_both_writes_when_the_block_succeeds(tmp_path: Path) -> None:
    """The seed's update_task_status: the status and its history row land together."""
    async with open_db(tmp_path / "t.db") as db:
        async with db.transaction() as conn:
            assert conn is db.conn
            await db.execute("INSERT INTO tasks VALUES (?, ?)", "t-1", "running")
            await db.execute("INSERT INTO task_history VALUES (?, ?)", "t-1", "running")
        # A second connection sees committed data only.
        other = sqlite3.connect(str(tmp_path / "t.db"))
        assert other.execute("SELECT status FROM tasks").fetchall() == [("running",)]
        assert other.execute("SELECT count(*) FROM task_history").fetchall() == [(1,)]
        other.close()


async def test_a_driver_error_rolls_back_and_becomes_database_error(tmp_path: Path) -> None:
    """An IntegrityError mid-transaction: nothing is kept, DatabaseError from the driver's."""
    async with open_db(tmp_path / "t.db") as db:
        async def insert_twice() -> None:
            async with db.transaction(operation="update_task_status"):
                await db.execute("INSERT INTO tasks VALUES (?, ?)", "t-1", "running")
                await db.execute("INSERT INTO tasks VALUES (?, ?)", "t-1", "again")

        with capture_logs() as logs, pytest.raises(errors.DatabaseError) as caught:
            await insert_twice()
        assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
        assert caught.value.details["operation"] == "update_task_status"
        assert caught.value.error_code == "DATABASE_ERROR"
        assert await db.execute("SELECT count(*) FROM tasks") == [(0,)]
        assert logs[0]["event"] == "resilience.transaction.rolled_back"
        assert logs[0]["log_level"] == "error"


async def test_other_errors_roll_back_and_propagate_unchanged(tmp_path: Path) -> None:
    """A business error in the block is not a database error: rolled back, raised as is."""
    async with open_db(tmp_path / "t.db") as db:
        async def insert_then_fail() -> None:
            async with db.transaction():
                await db.execute("INSERT INTO tasks VALUES (?, ?)", "t-1", "running")
                raise errors.TaskNotFoundError("t-2")

        with pytest.raises(errors.TaskNotFoundError):
            await insert_then_fail()
        assert await db.execute("SELECT count(*) FROM tasks") == [(0,)]


async def test_cancellation_rolls_back(tmp_path: Path) -> None:
    """A cancelled task leaves no half-written transaction behind."""
    async with open_db(tmp_path / "t.db") as db:
        entered = asyncio.Event()

        async def writer() -> None:
            async with db.transaction():
                await db.execute("INSERT INTO tasks VALUES (?, ?)", "t-1", "running")
                entered.set()
                await asyncio.Event().wait()  # cancelled here

        task = asyncio.ensure_future(writer())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await db.execute("SELECT count(*) FROM tasks") == [(0,)]


class FailingCommit:
    """A DB-API connection whose commit fails like a full disk (async methods, as asyncpg's)."""

    def __init__(self) -> None:
        self.rolled_back = 0

    async def commit(self) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    async def rollback(self) -> None:
        self.rolled_back += 1


async def test_a_failing_commit_rolls_back_and_raises_database_error() -> None:
    """Commit's driver error: rolled back, DatabaseError('... commit') from it."""
    conn = FailingCommit()
    with pytest.raises(errors.DatabaseError, match="commit") as caught:
        async with database_transaction(conn, driver_errors=(sqlite3.Error,)):
            pass
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    assert conn.rolled_back == 1
