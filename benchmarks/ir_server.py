"""A benchmark server for instruction counting: ``python -m benchmarks.ir_server VARIANT STACK``.

Run under valgrind's callgrind by :mod:`benchmarks.instructions`: it builds the Bench service of
``VARIANT`` (see :mod:`benchmarks.variants`) on ``STACK`` (``sync`` or ``aio``) exactly as the
CPU benchmark's server processes do, binds 127.0.0.1:0, prints the port on one line of stdout,
and serves until its stdin is closed. Plain pipes, not multiprocessing: the process valgrind
starts must be the server itself.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from concurrent import futures

import grpc

from benchmarks import procs, variants


def _serve_sync(variant: str) -> None:
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=procs.SYNC_SERVER_WORKERS),
        interceptors=list(variants.interceptors(variant, "sync")))
    server.add_generic_rpc_handlers((variants.handlers(variant, "sync"),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()  # until the driver closes the pipe
    server.stop(grace=None).wait(5)


async def _serve_aio(variant: str) -> None:
    server = grpc.aio.server(interceptors=list(variants.interceptors(variant, "aio")))
    server.add_generic_rpc_handlers((variants.handlers(variant, "aio"),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(grace=None)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve ``VARIANT`` on ``STACK`` until stdin closes."""
    variant, stack = (sys.argv[1:] if argv is None else list(argv))
    if stack == "sync":
        _serve_sync(variant)
    elif stack == "aio":
        asyncio.run(_serve_aio(variant))
    else:
        raise SystemExit(f"unknown stack {stack!r}")


if __name__ == "__main__":
    main()
