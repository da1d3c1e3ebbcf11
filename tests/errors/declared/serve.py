"""Serve the generated order errors on one stack (run as a script by the interop test).

Usage: ``python serve.py OUT_DIR sync|aio``. ``OUT_DIR`` holds the generated ``acme_gen``
package. Prints the port, then serves until stdin closes. ``GetOrder`` raises
``OrderLockedError`` for ids starting with ``locked``, else ``OrderNotFoundError``.
"""

from __future__ import annotations

import asyncio
import sys
from concurrent import futures
from typing import Any

import grpc

sys.path.insert(0, sys.argv[1])

from acme_gen.acme.orders.v1 import orders_errors, orders_pb2, orders_pb2_grpc

from octollm_grpc.server import aio as server_aio
from octollm_grpc.server import server_interceptors


def _raise_for(order_id: str) -> orders_pb2.GetOrderResponse:
    if order_id.startswith("locked"):
        raise orders_errors.OrderLockedError(order_id=order_id)
    raise orders_errors.OrderNotFoundError(order_id=order_id)


class Orders(orders_pb2_grpc.OrderServiceServicer):
    def GetOrder(self, request: orders_pb2.GetOrderRequest,
                 context: Any) -> orders_pb2.GetOrderResponse:
        return _raise_for(request.order_id)


class AioOrders(orders_pb2_grpc.OrderServiceServicer):
    async def GetOrder(self, request: orders_pb2.GetOrderRequest,
                       context: Any) -> orders_pb2.GetOrderResponse:
        return _raise_for(request.order_id)


def _sync() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=server_interceptors(),
                         options=[("grpc.so_reuseport", 0)])
    orders_pb2_grpc.add_OrderServiceServicer_to_server(Orders(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()
    server.stop(None)


async def _aio() -> None:
    server = grpc.aio.server(interceptors=server_aio.server_interceptors(),
                             options=[("grpc.so_reuseport", 0)])
    orders_pb2_grpc.add_OrderServiceServicer_to_server(AioOrders(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(None)


if __name__ == "__main__":
    if sys.argv[2] == "sync":
        _sync()
    else:
        asyncio.run(_aio())
