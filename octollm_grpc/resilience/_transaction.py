"""``database_transaction``: commit or roll back, with driver errors raised as ``DatabaseError``.

Works with any DB-API style connection (``commit()`` / ``rollback()``, blocking or ``async``).
A blocking driver (the stdlib ``sqlite3``) should not run on the event loop: pass ``run``, e.g.
``functools.partial(loop.run_in_executor, executor)`` for the executor the connection lives in.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

from octollm_grpc._core.log import get_logger
from octollm_grpc.errors import DatabaseError

__all__ = ["Transactional", "database_transaction"]

C = TypeVar("C", bound="Transactional")

_log = get_logger("octollm_grpc.resilience")


class Transactional(Protocol):
    """What a connection needs: ``commit`` and ``rollback`` (returning ``None`` or awaitable)."""

    def commit(self) -> Any: ...
    def rollback(self) -> Any: ...


async def _direct(func: Callable[[], Any]) -> Any:
    return func()


async def _finish(run: Callable[[Callable[[], Any]], Awaitable[Any]],
                  step: Callable[[], Any]) -> None:
    result = await run(step)
    if inspect.isawaitable(result):
        await result


@asynccontextmanager
async def database_transaction(
    connection: C,
    *,
    operation: str = "transaction",
    driver_errors: tuple[type[BaseException], ...] = (Exception,),
    run: Callable[[Callable[[], Any]], Awaitable[Any]] = _direct,
) -> AsyncIterator[C]:
    """Yield ``connection``; commit when the block ends, roll back when it raises.

    - A ``driver_errors`` error from the block or from ``commit`` is rolled back and raised as
      ``DatabaseError(operation, error)`` ``from`` it (the driver's error is ``__cause__``);
      a ``DatabaseError`` raised in the block is rolled back and re-raised as it is.
    - Any other exception, and cancellation, is rolled back and re-raised unchanged.
    - A failing rollback is logged (``"Rollback failed"``); the error that caused it is raised.
    ``run(step)`` runs each blocking ``commit``/``rollback`` (default: in place).

    Args:
        connection: A DB-API style connection (``commit()`` and ``rollback()``).
        operation: Names the operation in the ``DatabaseError`` and the log.
        driver_errors: The driver's exceptions that become ``DatabaseError``.
        run: How a blocking ``commit``/``rollback`` is run (e.g. ``asyncio.to_thread``).

    Yields:
        ``connection``.

    Raises:
        DatabaseError: A ``driver_errors`` error from the block or from ``commit``.
    """
    try:
        yield connection
    except BaseException as error:
        _log.error("Transaction failed, rolling back", operation=operation, error=str(error),
                   error_type=type(error).__name__)
        await _rollback(connection, operation, run)
        if isinstance(error, driver_errors) and not isinstance(error, DatabaseError):
            raise DatabaseError(operation, error) from error
        raise
    try:
        await _finish(run, connection.commit)
    except driver_errors as error:
        _log.error("Commit failed, rolling back", operation=operation, error=str(error),
                   error_type=type(error).__name__)
        await _rollback(connection, operation, run)
        raise DatabaseError(f"{operation} commit", error) from error


async def _rollback(connection: Transactional, operation: str,
                    run: Callable[[Callable[[], Any]], Awaitable[Any]]) -> None:
    try:
        await _finish(run, connection.rollback)
    except Exception as error:  # noqa: BLE001 - the error that got us here is the one to raise
        _log.error("Rollback failed", operation=operation, error=str(error),
                   error_type=type(error).__name__)
