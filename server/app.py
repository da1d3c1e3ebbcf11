"""Start, run and stop the task service: interceptors, reflection, health, metrics, shutdown.

Startup prints one line per endpoint on stdout (``task service listening on HOST:PORT``,
``arm listening on ...``, ``http gateway on http://...``, ``metrics on http://...``) so
scripts and tests can find ports chosen with ``0``. SIGTERM or SIGINT starts a graceful
stop: the HTTP gateway stops (open requests finish), health turns NOT_SERVING, open watch
streams end, new calls are refused, in-flight calls get ``--grace`` seconds to finish, and
only then are the arm channel and the database closed, so every acknowledged write is
committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from octollm_grpc.client import BreakerSettings, RetryPolicy
from octollm_grpc.client.aio import resilient_channel
from octollm_grpc.server import (
    BearerAuth,
    RateLimit,
    RateLimiter,
    ServerMetrics,
    StaticTokens,
    configure_logging,
    current_request_id,
    serve_metrics,
)
from octollm_grpc.server._ratelimit import BucketStore
from octollm_grpc.server.aio import server_interceptors
from server.arm import SimulatedArm, start_arm
from server.arm_client import ArmClient
from server.config import Settings
from server.gateway import create_app, gateway_channel, start_gateway
from server.gen.octollm.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from server.service import TaskServicer
from server.store import TaskStore

__all__ = ["Endpoints", "run"]

SERVICE_NAME = tasks_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name
#: Reflection answers from the default descriptor pool; octollm_grpc.status loads these files
#: into it, and grpcurl needs them (through reflection) to decode error details.
DETAIL_FILES = ("google/rpc/error_details.proto", "octollm/errors/v1/errors.proto")


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the running service listens (ports resolved when 0 was asked for)."""

    target: str
    arm_target: str
    metrics_url: str | None
    http_url: str | None = None


#: Never rate limited: probes and grpcurl's reflection must work whatever the load.
UNLIMITED_METHODS = (
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
)


#: grpcio sets SO_REUSEPORT by default: a second server on a taken port would start and
#: silently share the traffic (and the callers' tasks) with the first. Off: a taken port fails.
SERVER_OPTIONS = (("grpc.so_reuseport", 0),)


def _cannot_listen(host: str, port: int, flag: str, hint: str = "") -> OSError:
    """Why startup stops: the address, and the flag that chooses another port."""
    return OSError(f"cannot listen on {host}:{port} (is the port taken?); choose another "
                   f"port with {flag}{hint}")


def _server_interceptors(settings: Settings, metrics: ServerMetrics,
                         store: BucketStore | None = None) -> list[Any]:
    """The task service's stack: errors, request ids, logs, metrics; rate limit and auth by flag.

    ``store`` holds the rate-limit buckets (``--redis-url``); by default this process's memory.
    """
    limiter = None
    if settings.rate_limit:
        limiter = RateLimiter(
            RateLimit(settings.rate_limit, settings.rate_window, settings.burst),
            methods=dict.fromkeys(UNLIMITED_METHODS), store=store)
    auth = BearerAuth(StaticTokens({settings.auth_token: ()})) if settings.auth_token else None
    return server_interceptors(metrics=metrics, rate_limit=limiter, auth=auth,
                               debug=settings.dev)


def _arm_channel(settings: Settings, target: str, registry: CollectorRegistry) -> grpc.aio.Channel:
    """The channel to the arm: retry (``--arm-attempts``), the retry budget, the breaker.

    ``--arm-timeout`` is the policy's per-attempt timeout: an attempt it cuts is the arm's
    failure (it counts against the breaker), while a task's own ``timeout_seconds`` or the
    caller's deadline running out says nothing about the arm (no verdict).
    """
    return resilient_channel(
        target,
        retry=RetryPolicy(max_attempts=settings.arm_attempts,
                          per_attempt_timeout=settings.arm_timeout),
        breaker=BreakerSettings(
            failure_threshold=settings.arm_breaker_failures,
            reset_timeout=settings.arm_breaker_reset,
            max_reset_timeout=max(settings.arm_breaker_reset, 300.0)),
        registry=registry)


async def run(settings: Settings, *, stop: asyncio.Event | None = None,
              on_ready: Callable[[Endpoints], None] | None = None) -> None:
    """Serve until ``stop`` is set (by default: until SIGTERM or SIGINT), then stop gracefully.

    Whatever was started is stopped again in reverse order, also when startup fails half-way:
    server (in-flight calls finish within ``grace``), storage thread, arm channel, arm,
    database.
    """
    configure_logging(level=getattr(logging, settings.log_level.upper()))
    for name in DETAIL_FILES:
        descriptor_pool.Default().FindFileByName(name)  # fails loudly if one is missing
    registry = CollectorRegistry()
    async with contextlib.AsyncExitStack() as cleanup:
        store = TaskStore(settings.db)
        cleanup.callback(store.close)
        store.fail_interrupted()

        if settings.arm_target:
            arm_target = settings.arm_target  # primary,fallback,...
        else:
            arm = SimulatedArm(settings.arm_faults, rng=random.Random(settings.arm_seed))
            try:
                arm_server, arm_port = await start_arm(
                    arm, "127.0.0.1", settings.arm_port,
                    server_interceptors(metrics=ServerMetrics(registry, component="arm"),
                                        debug=settings.dev))
            except OSError as error:
                raise _cannot_listen("127.0.0.1", settings.arm_port, "--arm-port") from error
            cleanup.push_async_callback(arm_server.stop, 1.0)
            arm_target = f"127.0.0.1:{arm_port}"
        channels = [_arm_channel(settings, target, registry)
                    for target in arm_target.split(",")]
        for channel in channels:
            cleanup.push_async_callback(channel.close)

        servicer = TaskServicer(store, ArmClient(channels, attempt_timeout=settings.arm_timeout),
                                request_id=current_request_id, debug=settings.dev,
                                arm_retried=settings.arm_attempts > 1)
        cleanup.callback(servicer.close)
        # After the server's grace: executions still running are stopped and their tasks
        # committed FAILED ("server shutting down") while the database is still open.
        cleanup.push_async_callback(servicer.stop_executions)
        bucket_store = None
        if settings.redis_url and settings.rate_limit:
            # Imported here: redis (the [redis] extra) is needed only with --redis-url.
            from octollm_grpc.server.ratelimit_redis import RedisStore

            bucket_store = RedisStore(settings.redis_url, timeout=settings.redis_timeout,
                                      registry=registry)
            cleanup.push_async_callback(bucket_store.aclose)
            # Connected before serving; an unreachable Redis is logged, not fatal (local buckets).
            await bucket_store.connect_async()
        server = grpc.aio.server(interceptors=_server_interceptors(
            settings, ServerMetrics(registry, component="task_service"), bucket_store),
            options=SERVER_OPTIONS)
        tasks_pb2_grpc.add_TaskServiceServicer_to_server(  # type: ignore[no-untyped-call]
            servicer, server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        try:
            port = server.add_insecure_port(f"{settings.host}:{settings.port}")
        except RuntimeError:  # grpcio's way of saying the bind failed
            port = 0
        if port == 0:
            raise _cannot_listen(settings.host, settings.port, "--port")
        await server.start()
        # Refuses new calls at once; in-flight ones get `grace` seconds, then are cancelled.
        cleanup.push_async_callback(server.stop, settings.grace)
        cleanup.callback(servicer.events.close)  # before the stop: watch streams end at once
        cleanup.callback(servicer.begin_shutdown)  # handlers cut short now say why
        cleanup.push_async_callback(health_servicer.enter_graceful_shutdown)
        await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)

        http_url = None
        if settings.http_port >= 0:
            http_channel = gateway_channel(f"{settings.host}:{port}", registry)
            cleanup.push_async_callback(http_channel.close)
            gateway = await start_gateway(
                create_app(http_channel, metrics=ServerMetrics(registry, component="http")),
                settings.host, settings.http_port)
            # Stops before the gRPC server does (exit stack: last in, first out).
            cleanup.push_async_callback(gateway.stop)
            http_url = gateway.url

        metrics_url = None
        if settings.metrics_port >= 0:
            try:
                metrics_server, _ = serve_metrics(settings.metrics_port, settings.host,
                                                  registry)
            except OSError as error:
                raise _cannot_listen(settings.host, settings.metrics_port, "--metrics-port",
                                     "; -1 turns metrics off") from error
            cleanup.callback(metrics_server.shutdown)
            metrics_url = f"http://{settings.host}:{metrics_server.server_port}/metrics"

        if stop is None:
            # Before the ready lines: a SIGTERM sent as soon as they appear must stop us
            # gracefully, not kill us with the default action.
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
        endpoints = Endpoints(f"{settings.host}:{port}", arm_target, metrics_url, http_url)
        print(f"task service listening on {endpoints.target}", flush=True)
        print(f"arm listening on {arm_target}", flush=True)
        if http_url:
            print(f"http gateway on {http_url}", flush=True)
        if metrics_url:
            print(f"metrics on {metrics_url}", flush=True)
        if on_ready is not None:
            on_ready(endpoints)

        await stop.wait()
