"""database_transaction on sqlite3: only driver errors wrapped, no driver text sent, savepoints."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from structlog.testing import capture_logs

from octollm_grpc import errors
from octollm_grpc.resilience import database_transaction
from octollm_grpc.server import aio as server_aio
from octollm_grpc.server import server_interceptors
from tests.servers import aio_server, sync_server

SECRET = "password=hunter2"


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(str(tmp_path / "t.db"))
    connection.execute("CREATE TABLE tasks (id TEXT PRIMARY KEY)")
    connection.commit()
    yield connection
    connection.close()


def _rows(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT id FROM tasks ORDER BY id")]


def _committed(path: Path) -> list[str]:
    other = sqlite3.connect(str(path))
    try:
        return [row[0] for row in other.execute("SELECT id FROM tasks ORDER BY id")]
    finally:
        other.close()


async def test_a_bug_in_the_block_is_not_a_database_error_by_default(
        conn: sqlite3.Connection) -> None:
    """Default driver_errors (the connection's DB-API Error): a RuntimeError stays one."""
    async def block() -> None:
        async with database_transaction(conn):
            conn.execute("INSERT INTO tasks VALUES ('a')")
            raise RuntimeError(SECRET)

    with pytest.raises(RuntimeError, match="hunter2"):
        await block()
    assert _rows(conn) == []


async def test_a_driver_error_is_wrapped_by_default_without_its_text(
        conn: sqlite3.Connection) -> None:
    """sqlite3's error (its Error class found on the connection): DatabaseError, class name only."""
    async def block() -> None:
        async with database_transaction(conn, operation="save"):
            conn.execute("INSERT INTO tasks VALUES ('a')")
            raise sqlite3.OperationalError(f"no such table: x ({SECRET})")

    with capture_logs() as logs, pytest.raises(errors.DatabaseError) as caught:
        await block()
    error = caught.value
    assert error.message == "Database save failed: OperationalError"
    assert error.details == {"operation": "save", "error": "OperationalError"}
    assert SECRET not in str(error.to_dict())
    assert isinstance(error.__cause__, sqlite3.OperationalError)
    assert _rows(conn) == []
    # The text is for the operator: logged.
    assert logs[0]["event"] == "resilience.transaction.rolled_back"
    assert SECRET in str(logs[0]["error"]) and logs[0]["error_type"] == "OperationalError"


async def test_an_octollm_error_is_never_wrapped(conn: sqlite3.Connection) -> None:
    """Even with driver_errors=(Exception,), TaskNotFoundError comes out as itself."""
    async def block() -> None:
        async with database_transaction(conn, driver_errors=(Exception,)):
            conn.execute("INSERT INTO tasks VALUES ('a')")
            raise errors.TaskNotFoundError("t-9")

    with pytest.raises(errors.TaskNotFoundError):
        await block()
    assert _rows(conn) == []


async def test_a_connection_without_error_class_wraps_nothing() -> None:
    """No driver_errors and no connection.Error: every error is raised unchanged."""
    class Bare:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def commit(self) -> None:
            self.calls.append("commit")

        def rollback(self) -> None:
            self.calls.append("rollback")

    bare = Bare()
    with pytest.raises(sqlite3.OperationalError):
        async with database_transaction(bare):
            raise sqlite3.OperationalError("disk I/O error")
    assert bare.calls == ["rollback"]
    async with database_transaction(bare):
        pass
    assert bare.calls == ["rollback", "commit"]


async def test_a_nested_success_commits_nothing_of_a_failed_outer_block(
        conn: sqlite3.Connection, tmp_path: Path) -> None:
    """Inner block done, outer block fails: neither block's rows are left."""
    async def block() -> None:
        async with database_transaction(conn):
            conn.execute("INSERT INTO tasks VALUES ('outer')")
            async with database_transaction(conn):
                conn.execute("INSERT INTO tasks VALUES ('inner')")
            assert _committed(tmp_path / "t.db") == []  # the inner end committed nothing
            raise ValueError("outer")

    with pytest.raises(ValueError, match="outer"):
        await block()
    assert _rows(conn) == [] and _committed(tmp_path / "t.db") == []


async def test_a_nested_savepoint_before_any_write_stays_in_the_outer_transaction(
        conn: sqlite3.Connection, tmp_path: Path) -> None:
    """The inner block writes first (sqlite3 has no transaction open yet): still all or none."""
    async def block() -> None:
        async with database_transaction(conn):
            async with database_transaction(conn):
                conn.execute("INSERT INTO tasks VALUES ('inner')")
            conn.execute("INSERT INTO tasks VALUES ('outer')")
            raise ValueError("outer")

    with pytest.raises(ValueError, match="outer"):
        await block()
    assert _committed(tmp_path / "t.db") == []
    async with database_transaction(conn):
        async with database_transaction(conn):
            conn.execute("INSERT INTO tasks VALUES ('inner')")
        conn.execute("INSERT INTO tasks VALUES ('outer')")
    assert _committed(tmp_path / "t.db") == ["inner", "outer"]


async def test_a_failed_nested_block_undoes_only_its_own_writes(
        conn: sqlite3.Connection, tmp_path: Path) -> None:
    """Inner block fails and is handled: the outer block's rows commit, the inner's do not."""
    async def inner() -> None:
        async with database_transaction(conn, operation="inner"):
            conn.execute("INSERT INTO tasks VALUES ('inner')")
            conn.execute("INSERT INTO tasks VALUES ('inner')")  # IntegrityError

    with capture_logs() as logs:
        async with database_transaction(conn, operation="outer"):
            conn.execute("INSERT INTO tasks VALUES ('outer')")
            with pytest.raises(errors.DatabaseError) as caught:
                await inner()
            assert caught.value.details == {"operation": "inner", "error": "IntegrityError"}
            async with database_transaction(conn):
                conn.execute("INSERT INTO tasks VALUES ('second')")
    assert _committed(tmp_path / "t.db") == ["outer", "second"]
    failed = [x for x in logs if x["event"] == "resilience.transaction.rolled_back"]
    assert len(failed) == 1 and str(failed[0]["savepoint"]).startswith("octollm_savepoint_")


async def test_an_inner_database_error_is_not_wrapped_twice(conn: sqlite3.Connection) -> None:
    """The inner DatabaseError propagates through the outer block as it is, all rolled back."""
    async def block() -> None:
        async with database_transaction(conn, operation="outer"):
            conn.execute("INSERT INTO tasks VALUES ('outer')")
            async with database_transaction(conn, operation="inner"):
                conn.execute("INSERT INTO tasks VALUES ('outer')")

    with pytest.raises(errors.DatabaseError) as caught:
        await block()
    assert caught.value.details["operation"] == "inner"
    assert _rows(conn) == []


async def test_separate_connections_are_not_nested(tmp_path: Path,
                                                   conn: sqlite3.Connection) -> None:
    """A block on another connection inside one is its own transaction (committed on its own)."""
    other = sqlite3.connect(str(tmp_path / "t.db"))
    try:
        async with database_transaction(conn):
            async with database_transaction(other):
                other.execute("INSERT INTO tasks VALUES ('other')")
            assert _committed(tmp_path / "t.db") == ["other"]
    finally:
        other.close()


def _failing_block(conn: sqlite3.Connection, kind: str) -> Any:
    async def block() -> None:
        async with database_transaction(conn, operation="save", driver_errors=(Exception,)):
            conn.execute("INSERT INTO tasks VALUES ('a')")
            if kind == "driver":
                raise sqlite3.OperationalError(f"cannot write ({SECRET})")
            if kind == "missing":
                raise errors.TaskNotFoundError("t-9")
            raise RuntimeError(SECRET)

    return block


def _handler(conn: sqlite3.Connection, aio: bool) -> grpc.GenericRpcHandler:
    def sync_run(request: bytes, context: Any) -> bytes:
        asyncio.run(_failing_block(conn, request.decode())())
        return b""

    async def aio_run(request: bytes, context: Any) -> bytes:
        await _failing_block(conn, request.decode())()
        return b""

    return grpc.method_handlers_generic_handler("test.Db", {
        "Run": grpc.unary_unary_rpc_method_handler(aio_run if aio else sync_run)})


EXPECTED = {
    "driver": (grpc.StatusCode.INTERNAL, "DATABASE_ERROR",
               "Database save failed: OperationalError"),
    "missing": (grpc.StatusCode.NOT_FOUND, "TASK_NOT_FOUND", "Task t-9 not found"),
    # A bug's text never leaves: even with driver_errors=(Exception,) it is wrapped nameless.
    "bug": (grpc.StatusCode.INTERNAL, "DATABASE_ERROR", "Database save failed: RuntimeError"),
}


def _assert_on_the_wire(error: grpc.RpcError, kind: str) -> None:
    code, reason, message = EXPECTED[kind]
    assert error.code() is code
    assert error.details() == message
    wire = repr(error.trailing_metadata())
    assert SECRET not in wire and "hunter2" not in wire
    assert reason.encode() in b"".join(
        v for k, v in error.trailing_metadata() if k.endswith("-bin"))


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_what_a_sync_server_sends(conn: sqlite3.Connection, kind: str) -> None:
    """Over a real grpc.server: the class's code and message, no driver or bug text."""
    sqlite_conn = sqlite3.connect(conn.execute("PRAGMA database_list").fetchone()[2],
                                  check_same_thread=False)
    try:
        with sync_server([_handler(sqlite_conn, aio=False)],
                         interceptors=server_interceptors()) as target:
            with grpc.insecure_channel(target) as channel:
                with pytest.raises(grpc.RpcError) as caught:
                    channel.unary_unary("/test.Db/Run")(kind.encode(), timeout=10)
        _assert_on_the_wire(caught.value, kind)
    finally:
        sqlite_conn.close()


@pytest.mark.parametrize("kind", sorted(EXPECTED))
async def test_what_an_aio_server_sends(conn: sqlite3.Connection, kind: str) -> None:
    """Over a real grpc.aio server: the same codes and messages, no driver or bug text."""
    async with aio_server([_handler(conn, aio=True)],
                          interceptors=server_aio.server_interceptors()) as target:
        async with grpc.aio.insecure_channel(target) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary("/test.Db/Run")(kind.encode(), timeout=10)
    _assert_on_the_wire(caught.value, kind)
