"""The simulated LLM arm: the downstream the task service calls, with injectable faults.

``python -m server.arm --port 50061 --failure-rate 0.5`` runs one on its own; the task
service starts one in-process unless ``--arm-target`` points at another. Faults:

- ``failure_rate``: that share of calls fails with ``LLMAPIError`` (``UNAVAILABLE``,
  ``LLM_API_ERROR`` details), as a provider's 503 would;
- ``latency``: every call waits that long first (so deadlines and timeouts can be seen);
- ``down``: every call fails with a bare ``UNAVAILABLE`` and no details, like a proxy whose
  backend is gone (the caller cannot tell it from a refused connection).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from octollm_grpc.errors import LLMAPIError
from server.gen.octollm.arms.v1 import arms_pb2, arms_pb2_grpc

__all__ = ["ArmFaults", "SimulatedArm", "main", "start_arm"]

PROVIDER = "simulated-arm"


@dataclass(frozen=True, slots=True)
class ArmFaults:
    """What goes wrong on the arm, on purpose."""

    failure_rate: float = 0.0
    latency: float = 0.0
    """Seconds every call waits before answering."""
    down: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError(f"failure_rate must be within 0..1, not {self.failure_rate!r}")
        if self.latency < 0:
            raise ValueError(f"latency must not be negative, not {self.latency!r}")


class SimulatedArm(arms_pb2_grpc.ArmServiceServicer):
    """An ``ArmService`` that echoes a canned completion, failing as ``faults`` says.

    ``rng`` and ``sleep`` are injectable so tests decide which calls fail and never wait.
    """

    def __init__(self, faults: ArmFaults, *, arm_id: str = "arm-1",
                 rng: random.Random | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.faults = faults
        self.arm_id = arm_id
        self.calls = 0
        self._rng = rng or random.Random()
        self._sleep = sleep

    async def Complete(
        self, request: arms_pb2.CompleteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> arms_pb2.CompleteResponse:
        self.calls += 1
        if self.faults.down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "arm is down")
        if self.faults.latency:
            await self._sleep(self.faults.latency)
        if self._rng.random() < self.faults.failure_rate:
            raise LLMAPIError(PROVIDER, status_code=503, error_message="injected failure")
        words = request.prompt.split()
        return arms_pb2.CompleteResponse(
            text=f"Completed (priority {request.priority}): {request.prompt.strip()}",
            arm_id=self.arm_id,
            tokens=len(words),
        )


async def start_arm(arm: SimulatedArm, host: str, port: int,
                    interceptors: Sequence[Any] = (),
                    credentials: grpc.ServerCredentials | None = None,
                    ) -> tuple[grpc.aio.Server, int]:
    """Serve ``arm`` on ``host:port`` (0 picks a free port), over TLS with ``credentials``;
    return the server and its port."""
    # No SO_REUSEPORT (grpcio's default): a taken port must fail, not share the traffic.
    server = grpc.aio.server(interceptors=list(interceptors),
                             options=(("grpc.so_reuseport", 0),))
    # The generated *_pb2_grpc modules have no type stubs.
    arms_pb2_grpc.add_ArmServiceServicer_to_server(arm, server)  # type: ignore[no-untyped-call]
    try:
        bound = (server.add_secure_port(f"{host}:{port}", credentials)
                 if credentials is not None else server.add_insecure_port(f"{host}:{port}"))
    except RuntimeError:  # grpcio's way of saying the bind failed
        bound = 0
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    await server.start()
    return server, bound


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m server.arm",
        description="Run the simulated LLM arm (octollm.arms.v1.ArmService) on its own.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=50061, help="port (0 picks a free one)")
    parser.add_argument("--failure-rate", type=float, default=0.0,
                        help="share of calls failing with LLM_API_ERROR, 0..1")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="milliseconds every call waits before answering")
    parser.add_argument("--down", action="store_true",
                        help="fail every call with a bare UNAVAILABLE")
    parser.add_argument("--seed", type=int, default=None, help="random seed for --failure-rate")
    parser.add_argument("--arm-id", default="arm-1",
                        help="the arm_id this arm answers with (tells fallback arms apart)")
    parser.add_argument("--tls-cert", default=None, metavar="FILE",
                        help="serve over TLS with this PEM certificate chain (with --tls-key)")
    parser.add_argument("--tls-key", default=None, metavar="FILE",
                        help="PEM private key of --tls-cert")
    parser.add_argument("--tls-client-ca", default=None, metavar="FILE",
                        help="require client certificates this PEM CA signed (mTLS)")
    return parser


async def _serve(args: argparse.Namespace) -> None:
    from octollm_grpc.server.aio import server_interceptors

    faults = ArmFaults(args.failure_rate, args.latency_ms / 1000.0, args.down)
    arm = SimulatedArm(faults, arm_id=args.arm_id, rng=random.Random(args.seed))
    credentials = None
    if args.tls_cert is not None:
        from octollm_grpc.server import server_credentials

        credentials = server_credentials(args.tls_cert, args.tls_key, args.tls_client_ca)
    server, port = await start_arm(arm, args.host, args.port, server_interceptors(),
                                   credentials)
    print(f"arm listening on {args.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(grace=2.0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m server.arm``."""
    args = _parser().parse_args(argv)
    try:
        ArmFaults(args.failure_rate, args.latency_ms / 1000.0, args.down)
    except ValueError as error:
        _parser().error(str(error))
    if (args.tls_cert is None) != (args.tls_key is None) or (
            args.tls_client_ca is not None and args.tls_cert is None):
        _parser().error("--tls-cert and --tls-key go together (--tls-client-ca needs both)")
    try:
        asyncio.run(_serve(args))
    except OSError as error:
        print(f"python -m server.arm: {error}; choose another port with --port",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
