"""Call the order service through a resilient channel and catch the generated class.

Usage: ``python client.py OUT_DIR sync|aio TARGET ORDER_ID``; prints one JSON line with what
the caught ``OrderNotFoundError`` holds (this process registered the class by importing it).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

sys.path.insert(0, sys.argv[1])

from acme_gen.acme.orders.v1 import orders_errors, orders_pb2, orders_pb2_grpc
from google.rpc import error_details_pb2

from octollm_grpc.client import aio as client_aio
from octollm_grpc.client import resilient_channel


def _report(error: orders_errors.OrderNotFoundError) -> dict[str, Any]:
    info = error_details_pb2.ErrorInfo()
    assert error.rich_status is not None
    error.rich_status.details[0].Unpack(info)
    return {"class": type(error).__name__, "message": error.message,
            "details": dict(error.details), "code": error.code().name,
            "error_code": error.error_code, "reason": info.reason, "domain": info.domain,
            "metadata": dict(info.metadata), "grpc_details": error.details()}


def _sync(target: str, order_id: str) -> dict[str, Any]:
    with resilient_channel(target) as channel:
        try:
            orders_pb2_grpc.OrderServiceStub(channel).GetOrder(
                orders_pb2.GetOrderRequest(order_id=order_id), timeout=10)
        except orders_errors.OrderNotFoundError as error:
            return _report(error)
    raise AssertionError("no error")


async def _aio(target: str, order_id: str) -> dict[str, Any]:
    async with client_aio.resilient_channel(target) as channel:
        try:
            await orders_pb2_grpc.OrderServiceStub(channel).GetOrder(
                orders_pb2.GetOrderRequest(order_id=order_id), timeout=10)
        except orders_errors.OrderNotFoundError as error:
            return _report(error)
    raise AssertionError("no error")


if __name__ == "__main__":
    stack, target, order = sys.argv[2:5]
    result = _sync(target, order) if stack == "sync" else asyncio.run(_aio(target, order))
    print(json.dumps(result, sort_keys=True))
