"""``octollm.tasks.v1.TaskService``: handlers raise typed errors, the interceptors encode them.

Handlers never build a status themselves: they raise ``OctoLLMError`` subclasses and the
server interceptor stack turns each into its code and rich details. The one exception is
``ExecuteBatch``, whose per-item failures travel inside a successful response: each is the
``google.rpc.Status`` that ``to_status_proto`` gives, exactly what a single call would carry.

Storage runs on one dedicated thread (SQLite connections are not for sharing across threads,
and one writer thread serialises the transactions).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, ParamSpec, Protocol, TypeVar

import grpc
import structlog

from octollm_grpc import errors
from octollm_grpc.status import to_status
from octollm_grpc.status._encode import to_status_proto
from octollm_grpc.status._limits import PUSHBACK_KEY
from server import messages, validation
from server.events import TaskEvents
from server.gen.octollm.arms.v1 import arms_pb2
from server.gen.octollm.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from server.store import Status, TaskRecord, TaskStore

__all__ = ["Arm", "TaskServicer"]

Context = grpc.aio.ServicerContext[Any, Any]
_P = ParamSpec("_P")
_T = TypeVar("_T")

log = structlog.get_logger("server.service")

_EXECUTABLE = (Status.PENDING, Status.FAILED)
_CANCELLABLE = (Status.PENDING, Status.RUNNING)
#: The most a ListTasks page holds of tasks, in bytes: a page stays far below grpcio's
#: default 4 MiB receive limit (one task is at most ~80 KB), so any default client reads it.
_PAGE_BYTES = 1024 * 1024
#: How many batch items run on the arm at once.
_BATCH_CONCURRENCY = 8


class Arm(Protocol):
    """What the service needs of the arm (see :class:`server.arm_client.ArmClient`)."""

    async def complete(self, task_id: str, prompt: str, priority: int,
                       timeout: float | None) -> arms_pb2.CompleteResponse: ...


class TaskServicer(tasks_pb2_grpc.TaskServiceServicer):
    """The task service over a :class:`TaskStore` and an :class:`Arm`.

    An arm call is bounded by the task's own ``timeout_seconds`` and the caller's deadline
    (whichever ends first; neither counts against the arm), and each of its attempts by the arm
    channel's per-attempt timeout (which does).
    ``request_id`` returns the current call's request id (batch item statuses carry it);
    ``debug`` adds ``DebugInfo`` to those statuses, as ``--dev`` does for whole calls.
    ``arm_retried``: the arm channel retries failed calls itself, so an ExecuteTask that
    failed on the arm tells its caller not to retry (gRFC A6's negative pushback).
    """

    def __init__(self, store: TaskStore, arm: Arm, *,
                 request_id: Callable[[], str | None] = lambda: None,
                 debug: bool = False, arm_retried: bool = False) -> None:
        self._store = store
        self._arm = arm
        self._request_id = request_id
        self._debug = debug
        self._arm_retried = arm_retried
        self.events = TaskEvents()
        # Executions by task id (CancelTask and DeleteTask stop them), and all of them as
        # asyncio tasks (a stop waits for each to commit its final state).
        self._running: dict[str, set[_Execution]] = {}
        self._executions: set[asyncio.Future[TaskRecord]] = set()
        self._closing = False  # the server is stopping: a cancelled handler means that
        self._draining = False  # executions are being stopped: no new one may start
        self._closed = False
        self._db_thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="task-store")

    async def _db(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        # A caller that goes away stops waiting; work already handed to the thread still
        # commits or rolls back as a whole (each store method is one transaction).
        if self._closed:  # a late call after close(): an answer, not "cannot schedule futures"
            raise errors.ResourceError("The service is shutting down")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db_thread, lambda: fn(*args, **kwargs))

    async def _transition(self, task_id: str, allowed: tuple[Status, ...], to: Status, *,
                          note: str = "", result: str | None = None,
                          error: bytes | None = None) -> TaskRecord:
        record = await self._db(self._store.transition, task_id, allowed, to, note=note,
                                result=result, error=error)
        self.events.publish(task_id)
        return record

    async def _get(self, task_id: str) -> TaskRecord:
        record = await self._db(self._store.get, validation.require_task_id(task_id))
        if record is None:
            raise errors.TaskNotFoundError(task_id)
        return record

    def begin_shutdown(self) -> None:
        """The server is stopping: executions cut short from now on are "server shutting down".

        In-flight calls still run (the server's grace period), batch items included.
        """
        self._closing = True

    async def stop_executions(self) -> None:
        """Stop every execution still running and wait until each has committed its end.

        Call after the server has stopped serving (its grace period is over) and before
        :meth:`close`: the tasks are then FAILED ("server shutting down"), not left RUNNING.
        """
        self._closing = self._draining = True
        for executions in list(self._running.values()):
            for execution in list(executions):
                execution.stop(_SHUTTING_DOWN)
        if self._executions:
            await asyncio.wait(list(self._executions))

    def close(self) -> None:
        """Finish pending storage work (after :meth:`stop_executions`; the store stays open)."""
        self._closed = True
        self._db_thread.shutdown(wait=True)

    # -- RPCs -------------------------------------------------------------------------------

    async def CreateTask(
        self, request: tasks_pb2.CreateTaskRequest, context: Context
    ) -> tasks_pb2.CreateTaskResponse:
        priority = request.priority if request.HasField("priority") else None
        timeout = request.timeout_seconds if request.HasField("timeout_seconds") else None
        validation.validate_create(request.description, priority, timeout, request.request_id)
        record, created = await self._db(
            self._store.create, request.description,
            validation.DEFAULT_PRIORITY if priority is None else priority, timeout,
            request.request_id or None)
        log.info("task.created" if created else "task.create.replayed",
                 task_id=record.task_id, idempotency_key=request.request_id or None)
        return tasks_pb2.CreateTaskResponse(task=messages.task_message(record))

    async def GetTask(
        self, request: tasks_pb2.GetTaskRequest, context: Context
    ) -> tasks_pb2.GetTaskResponse:
        record = await self._get(request.task_id)
        history = await self._db(self._store.history, record.task_id)
        return tasks_pb2.GetTaskResponse(task=messages.task_message(record),
                                         history=[messages.history_message(h) for h in history])

    async def ListTasks(
        self, request: tasks_pb2.ListTasksRequest, context: Context
    ) -> tasks_pb2.ListTasksResponse:
        size = validation.validate_page_size(request.page_size)
        after = messages.decode_page_token(request.page_token)
        records, more = await self._db(self._store.page, after, size, _PAGE_BYTES,
                                       _task_size)
        token = messages.encode_page_token(records[-1].seq) if more and records else ""
        return tasks_pb2.ListTasksResponse(tasks=[messages.task_message(r) for r in records],
                                           next_page_token=token)

    async def CancelTask(
        self, request: tasks_pb2.CancelTaskRequest, context: Context
    ) -> tasks_pb2.CancelTaskResponse:
        task_id = validation.require_task_id(request.task_id)
        record = await self._transition(task_id, _CANCELLABLE, Status.CANCELLED,
                                        note="cancelled by a client")
        # The arm call too: its result would be discarded anyway.
        was_running = self._stop_executions(task_id, _CANCELLED)
        log.info("task.cancelled", task_id=task_id, was_running=was_running)
        return tasks_pb2.CancelTaskResponse(task=messages.task_message(record))

    async def DeleteTask(
        self, request: tasks_pb2.DeleteTaskRequest, context: Context
    ) -> tasks_pb2.DeleteTaskResponse:
        task_id = validation.require_task_id(request.task_id)
        await self._db(self._store.delete, task_id)
        self.events.publish(task_id)
        # Its arm call too, as CancelTask does: nobody can read the result any more.
        was_running = self._stop_executions(task_id, _DELETED)
        log.info("task.deleted", task_id=task_id, was_running=was_running)
        return tasks_pb2.DeleteTaskResponse()

    async def ExecuteTask(
        self, request: tasks_pb2.ExecuteTaskRequest, context: Context
    ) -> tasks_pb2.ExecuteTaskResponse:
        record = await self._execute(request.task_id, context.time_remaining(),
                                     context if self._arm_retried else None)
        return tasks_pb2.ExecuteTaskResponse(task=messages.task_message(record))

    async def ExecuteBatch(
        self, request: tasks_pb2.ExecuteBatchRequest, context: Context
    ) -> tasks_pb2.ExecuteBatchResponse:
        task_ids = list(request.task_ids)
        validation.validate_batch(task_ids)
        gate = asyncio.Semaphore(_BATCH_CONCURRENCY)
        loop = asyncio.get_running_loop()
        remaining = context.time_remaining()
        # Items waiting for the gate use up the call's time too: each gets what is left then.
        deadline = None if remaining is None else loop.time() + remaining

        async def one(task_id: str) -> tasks_pb2.ExecuteBatchResult:
            async with gate:
                left = None if deadline is None else deadline - loop.time()
                try:
                    record = await self._execute(task_id, left)
                except Exception as error:
                    if not isinstance(error, errors.OctoLLMError):
                        log.critical("task.batch.item.unexpected", task_id=task_id,
                                     exc_info=error)
                    return tasks_pb2.ExecuteBatchResult(task_id=task_id, error=to_status_proto(
                        error, request_id=self._request_id(), debug=self._debug))
                return tasks_pb2.ExecuteBatchResult(task_id=task_id,
                                                    task=messages.task_message(record))

        results = await asyncio.gather(*(one(t) for t in task_ids))
        failed = sum(1 for r in results if r.HasField("error"))
        log.info("task.batch.executed", items=len(results), failed=failed)
        return tasks_pb2.ExecuteBatchResponse(results=results, succeeded=len(results) - failed,
                                              failed=failed)

    async def WatchTask(
        self, request: tasks_pb2.WatchTaskRequest, context: Context
    ) -> AsyncIterator[tasks_pb2.WatchTaskResponse]:
        task_id = validation.require_task_id(request.task_id)
        with self.events.subscribe(task_id) as changed:
            sent = 0
            # Ends when the task finishes, disappears, or the caller goes (or its deadline).
            while True:
                changed.clear()
                record = await self._db(self._store.get, task_id)
                if record is None:
                    raise errors.TaskNotFoundError(task_id)
                if record.version != sent:
                    sent = record.version
                    yield tasks_pb2.WatchTaskResponse(task=messages.task_message(record))
                if record.status.finished:
                    return
                if self.events.closed:
                    # An endless stream would hold a graceful stop for its whole grace period.
                    raise errors.ResourceError(
                        "The service is shutting down; watch the task again elsewhere")
                await changed.wait()

    # -- execution ----------------------------------------------------------------------------

    async def _execute(self, task_id: str, time_remaining: float | None,
                       retried_for: Context | None = None) -> TaskRecord:
        """Run one task on the arm; the record once COMPLETED, or raise why not.

        With ``retried_for``, a failure of the arm call (its retries spent) ends that call
        with "do not retry" advice: callers retrying too would multiply the arm's load.

        The execution runs as its own asyncio task that nothing cancels: its RUNNING,
        COMPLETED and FAILED writes always finish. When this handler is cancelled (the
        caller's deadline, the caller going away, the server stopping), the execution is
        only asked to stop; it then commits FAILED with the reason, in the background.
        """
        record = await self._get(task_id)
        if record.status is Status.COMPLETED:
            return record  # a repeated execute (a client's retry) returns the result it missed
        if self._draining:
            raise errors.ResourceError("The service is shutting down; execute the task later")
        execution = _Execution(task_id)
        execution.task = asyncio.ensure_future(self._run(execution, time_remaining))
        self._executions.add(execution.task)
        execution.task.add_done_callback(self._forget)
        try:
            # The shield keeps a cancelled handler from cancelling the execution's writes.
            return await asyncio.shield(execution.task)
        except asyncio.CancelledError:
            execution.stop(_SHUTTING_DOWN if self._closing else _CALLER_GONE)
            raise
        except errors.OctoLLMError as error:
            if execution.arm_failed and retried_for is not None:
                self._do_not_retry(retried_for, error)
            raise

    def _do_not_retry(self, context: Context, error: errors.OctoLLMError) -> None:
        """End the call with ``error``'s status plus a negative ``grpc-retry-pushback-ms``.

        The interceptors keep a status the handler set (code, message, trailers) and still
        log and count the error; an error with its own retry advice (an open breaker's
        ``retry_after``) keeps that advice instead.
        """
        status = to_status(error, request_id=self._request_id(), debug=self._debug)
        if any(key == PUSHBACK_KEY for key, _ in status.trailing_metadata):
            return
        context.set_code(status.code)
        context.set_details(status.details)
        context.set_trailing_metadata((*status.trailing_metadata, (PUSHBACK_KEY, "-1")))

    def _forget(self, task: asyncio.Future[TaskRecord]) -> None:
        self._executions.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that went away never will (no asyncio warning)

    async def _run(self, execution: _Execution, time_remaining: float | None) -> TaskRecord:
        """PENDING/FAILED -> RUNNING -> COMPLETED, or FAILED with why; never cancelled."""
        task_id = execution.task_id
        self._running.setdefault(task_id, set()).add(execution)
        try:
            record = await self._transition(task_id, _EXECUTABLE, Status.RUNNING,
                                            note="execution started")
            if execution.stopped is not None:  # stopped while the RUNNING write was queued
                return await self._stopped(execution)
            # The task's own time and the caller's: when one runs out, that is no verdict on
            # the arm. Without either, the arm channel's per-attempt timeout bounds each try.
            timeout = float(record.timeout_seconds) if record.timeout_seconds else None
            if time_remaining is not None:
                left = max(time_remaining, 0.001)
                timeout = left if timeout is None else min(timeout, left)
            execution.arm_call = asyncio.ensure_future(self._arm.complete(
                record.task_id, record.description, record.priority, timeout))
            try:
                answer = await execution.arm_call
            except asyncio.CancelledError:
                if execution.stopped is None:
                    raise  # not ours: this task itself is being cancelled (loop teardown)
                return await self._stopped(execution)
            except Exception as error:
                execution.arm_failed = True
                status = to_status_proto(error, debug=False)
                code = (error.error_code if isinstance(error, errors.OctoLLMError)
                        else "INTERNAL_ERROR")
                await self._finish_failed(task_id, code, status.SerializeToString())
                log.warning("task.execution.failed", task_id=task_id, error_code=code)
                raise
        finally:
            executions = self._running.get(task_id)
            if executions is not None:
                executions.discard(execution)
                if not executions:
                    del self._running[task_id]
        try:
            done = await self._transition(task_id, (Status.RUNNING,), Status.COMPLETED,
                                          note=f"completed by {answer.arm_id}", result=answer.text)
        except errors.InvalidStateError:
            raise _cancelled_while_running(task_id) from None
        log.info("task.execution.completed", task_id=task_id, arm_id=answer.arm_id)
        return done

    async def _stopped(self, execution: _Execution) -> NoReturn:
        """End a stopped execution: FAILED with the stop's note (unless that state is gone)."""
        stop = execution.stopped
        assert stop is not None
        await self._finish_failed(execution.task_id, stop.note, None)
        log.info("task.execution.stopped", task_id=execution.task_id, reason=stop.note)
        raise stop.error(execution.task_id)

    def _stop_executions(self, task_id: str, stop: _Stop) -> bool:
        """Stop every execution of ``task_id``; whether one was running."""
        executions = self._running.get(task_id, set())
        for execution in executions:
            execution.stop(stop)
        return bool(executions)

    async def _finish_failed(self, task_id: str, note: str, status: bytes | None) -> None:
        # Cancelled or deleted meanwhile: that state stands, and the failure is still raised.
        with contextlib.suppress(errors.InvalidStateError, errors.TaskNotFoundError):
            await self._transition(task_id, (Status.RUNNING,), Status.FAILED, note=note,
                                   error=status)


@dataclass(frozen=True, slots=True)
class _Stop:
    """Why an execution was stopped: the FAILED note stored, and the error its caller gets."""

    note: str
    error: Callable[[str], errors.OctoLLMError]


@dataclass(slots=True, eq=False)
class _Execution:
    """One run of a task on the arm, and what may stop it."""

    task_id: str
    task: asyncio.Future[TaskRecord] | None = None
    arm_call: asyncio.Future[arms_pb2.CompleteResponse] | None = None
    stopped: _Stop | None = None
    arm_failed: bool = False
    """The arm call failed (the arm channel's retries, if any, are spent)."""

    def stop(self, stop: _Stop) -> None:
        """Stop the arm call (or keep it from starting); the first reason given stands."""
        if self.stopped is None:
            self.stopped = stop
        if self.arm_call is not None:
            self.arm_call.cancel()


def _stopped_error(note: str) -> Callable[[str], errors.OctoLLMError]:
    return lambda task_id: errors.ResourceError(f"Task {task_id} was stopped: {note}")


# The first two errors reach nobody (the handler is gone); the task's history says why.
_CALLER_GONE = _Stop("the caller went away", _stopped_error("the caller went away"))
_SHUTTING_DOWN = _Stop("server shutting down", _stopped_error("server shutting down"))
_CANCELLED = _Stop("cancelled by a client", lambda task_id: _cancelled_while_running(task_id))
_DELETED = _Stop("deleted by a client", errors.TaskNotFoundError)


def _task_size(record: TaskRecord) -> int:
    # The bytes the task adds to a ListTasksResponse (its field tag and length prefix
    # included, up to 8 bytes).
    return messages.task_message(record).ByteSize() + 8


def _cancelled_while_running(task_id: str) -> errors.InvalidStateError:
    return errors.InvalidStateError(
        f"Task {task_id} was cancelled while it ran; its result was discarded",
        details={"subject": task_id, "status": Status.CANCELLED.value})
