"""``database_transaction``: commit or roll back, with driver errors raised as ``DatabaseError``.

Works with any DB-API style connection (``commit()`` / ``rollback()``, blocking or ``async``).
A blocking driver (the stdlib ``sqlite3``) should not run on the event loop: pass ``run``, e.g.
``functools.partial(loop.run_in_executor, executor)`` for the executor the connection lives in.

What reaches a caller is only ever ``DatabaseError(operation, <the driver error's class
name>)``: a driver's text can hold SQL, values or credentials, so it goes to the log only (and
stays the ``DatabaseError``'s ``__cause__``, which is never sent). A block nested in another on
the same connection (in the same task) is a savepoint, so its end commits nothing of the outer
block's.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

from octollm_grpc._core.log import get_logger
from octollm_grpc.errors import DatabaseError, OctoLLMError

__all__ = ["Transactional", "database_transaction"]

C = TypeVar("C", bound="Transactional")
Run = Callable[[Callable[[], Any]], Awaitable[Any]]
Errors = tuple[type[BaseException], ...]

_log = get_logger("octollm_grpc.resilience")

#: The connections (by id) this task is inside a transaction on, innermost last.
_open: contextvars.ContextVar[tuple[int, ...]] = contextvars.ContextVar(
    "octollm_grpc_transactions", default=())
_savepoint_ids = itertools.count(1)


class Transactional(Protocol):
    """What a connection needs: ``commit`` and ``rollback`` (returning ``None`` or awaitable).

    A nested block also needs ``execute(sql)`` or ``cursor().execute(sql)`` for its savepoint.
    """

    def commit(self) -> Any: ...
    def rollback(self) -> Any: ...


class _DriverFailure(Exception):
    """What ``DatabaseError`` is built from: the driver error's class name, none of its text."""


async def _direct(func: Callable[[], Any]) -> Any:
    return func()


async def _call(run: Run, step: Callable[[], Any]) -> Any:
    result = await run(step)
    if inspect.isawaitable(result):
        result = await result
    return result


def _execute(connection: Any, sql: str) -> Any:
    execute = getattr(connection, "execute", None)
    if execute is None:
        execute = connection.cursor().execute
    return execute(sql)


def _driver_errors(connection: Any, given: Errors | None) -> Errors:
    if given is not None:
        return given
    # PEP 249's optional extension: the module's Error base class, on the connection.
    found = getattr(connection, "Error", None)
    if isinstance(found, type) and issubclass(found, Exception):
        return (found,)
    return ()


def _as_database_error(error: BaseException, operation: str,
                       driver_errors: tuple[type[BaseException], ...]) -> BaseException | None:
    """The ``DatabaseError`` a driver error becomes, or ``None`` to raise ``error`` as it is."""
    if isinstance(error, OctoLLMError) or not isinstance(error, driver_errors):
        return None
    return DatabaseError(operation, _DriverFailure(type(error).__name__))


def _logged(event: str, operation: str, error: BaseException, **fields: Any) -> None:
    _log.error(event, operation=operation, error=str(error), error_type=type(error).__name__,
               **fields)


@asynccontextmanager
async def database_transaction(
    connection: C,
    *,
    operation: str = "transaction",
    driver_errors: tuple[type[BaseException], ...] | None = None,
    run: Run = _direct,
) -> AsyncIterator[C]:
    """Yield ``connection``; commit when the block ends, roll back when it raises.

    Args:
        connection: a DB-API style connection (blocking or async methods).
        operation: names the work in ``DatabaseError`` and the log events.
        driver_errors: the driver's exception classes (default: ``connection.Error``, PEP
            249's base class, when the connection has one; otherwise none are wrapped).
        run: runs each blocking driver step (default: in place).

    Yields:
        ``connection``.

    Raises:
        DatabaseError: a driver error from the block, the commit or a savepoint's release,
            rolled back, as ``DatabaseError(operation, <driver error class name>)`` ``from``
            it. The driver's text is logged, never put in the error (it may reach a caller).
        BaseException: anything else (an ``OctoLLMError`` such as ``TaskNotFoundError``,
            a bug, cancellation) is rolled back and re-raised unchanged. A failing rollback
            is logged (``"Rollback failed"``); the error that caused it is raised.

    A block nested in another on the same connection, in the same task, runs in a savepoint
    (``SAVEPOINT`` / ``RELEASE`` / ``ROLLBACK TO``): its failure undoes only its own writes,
    its success commits nothing until the outermost block commits.
    """
    wrapped = _driver_errors(connection, driver_errors)
    active = _open.get()
    token = _open.set((*active, id(connection)))
    try:
        if id(connection) in active:
            async with _savepoint(connection, operation, wrapped, run):
                yield connection
            return
        try:
            yield connection
        except BaseException as error:
            _logged("resilience.transaction.rolled_back", operation, error)
            await _rollback(connection, operation, run)
            replacement = _as_database_error(error, operation, wrapped)
            if replacement is not None:
                raise replacement from error
            raise
        try:
            await _call(run, connection.commit)
        except Exception as error:
            _logged("resilience.transaction.commit_failed", operation, error)
            await _rollback(connection, operation, run)
            replacement = _as_database_error(error, f"{operation} commit", wrapped)
            if replacement is not None:
                raise replacement from error
            raise
    finally:
        _open.reset(token)


@asynccontextmanager
async def _savepoint(connection: Any, operation: str,
                     wrapped: tuple[type[BaseException], ...], run: Run) -> AsyncIterator[None]:
    name = f"octollm_savepoint_{next(_savepoint_ids)}"
    # sqlite3 opens no transaction before the first write: a savepoint made outside one opens
    # it, and its RELEASE would commit it. Such a savepoint is left to the outer commit.
    inside = await _call(run, lambda: getattr(connection, "in_transaction", True)) is not False
    try:
        await _call(run, functools.partial(_execute, connection, f"SAVEPOINT {name}"))
    except Exception as error:
        _logged("Savepoint failed", operation, error)
        replacement = _as_database_error(error, f"{operation} savepoint", wrapped)
        if replacement is not None:
            raise replacement from error
        raise
    try:
        yield
    except BaseException as error:
        _logged("resilience.transaction.rolled_back", operation, error, savepoint=name)
        await _rollback_to(connection, operation, run, name, inside)
        replacement = _as_database_error(error, operation, wrapped)
        if replacement is not None:
            raise replacement from error
        raise
    if not inside:
        return
    try:
        await _call(run, functools.partial(_execute, connection, f"RELEASE SAVEPOINT {name}"))
    except Exception as error:
        _logged("resilience.transaction.commit_failed", operation, error, savepoint=name)
        await _rollback_to(connection, operation, run, name, inside)
        replacement = _as_database_error(error, f"{operation} commit", wrapped)
        if replacement is not None:
            raise replacement from error
        raise


async def _rollback(connection: Transactional, operation: str, run: Run) -> None:
    try:
        await _call(run, connection.rollback)
    except Exception as error:  # noqa: BLE001 - the error that got us here is the one to raise
        _logged("Rollback failed", operation, error)


async def _rollback_to(connection: Any, operation: str, run: Run, name: str,
                       inside: bool) -> None:
    try:
        await _call(run, functools.partial(_execute, connection, f"ROLLBACK TO SAVEPOINT {name}"))
        if inside:
            await _call(run, functools.partial(_execute, connection,
                                               f"RELEASE SAVEPOINT {name}"))
    except Exception as error:  # noqa: BLE001 - the error that got us here is the one to raise
        _logged("Rollback failed", operation, error, savepoint=name)
