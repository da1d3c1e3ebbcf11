"""The gateway's JSON decoding, in a worker process: no parse holds the gRPC server's loop.

A thread is not enough: ``json.loads`` holds the GIL for the whole parse, and a 1 MiB body of
small containers takes 60-400 ms to parse on a loaded host (the cyclic GC runs again and again
as the containers are made), so every gRPC caller of the process waited that long per body.
In a separate process the parse costs the event loop only the copy of the bytes in and of the
binary message out (about a millisecond per MiB).

This module imports only the standard library and protobuf, so the worker starts quickly.
"""

from __future__ import annotations

import importlib
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format

__all__ = ["decode", "exit_with_parent", "ready"]


def _message_class(module: str, qualname: str) -> Any:
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def decode(raw: bytes, module: str, qualname: str) -> tuple[str, bytes]:
    """Run in the worker: ``("ok", serialized message)``, ``("field", name)`` when a known field
    has a bad value (wrong type, out of range), or ``(why, b"")`` when ``raw`` is not JSON
    (``"json"``), not an object (``"object"``) or otherwise not the message (``"message"``)."""
    try:
        data = json.loads(raw) if raw else None
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
        return "json", b""
    if not isinstance(data, dict):
        return "object", b""
    message = _message_class(module, qualname)()
    try:
        json_format.ParseDict(data, message)
    except json_format.ParseError as error:
        # "Failed to parse FIELD field: ...": the field's name, when it is one of the message's
        # own (never text the caller sent, such as an unknown field's name).
        field = str(error).removeprefix("Failed to parse ").partition(" field")[0]
        if field in message.DESCRIPTOR.fields_by_name:
            return "field", field.encode()
        return "message", b""
    except (ValueError, TypeError, RecursionError):
        return "message", b""
    return "ok", message.SerializeToString()


def ready() -> bool:
    """A no-op the gateway runs once at start, so the worker is up before the first body."""
    return True


def exit_with_parent(parent: int, interval: float = 0.5,
                     sleep: Callable[[float], None] = time.sleep,
                     parent_of: Callable[[], int] = os.getppid,
                     leave: Callable[[int], None] = os._exit) -> threading.Thread:
    """The worker's initializer: a daemon thread that ends the worker once ``parent`` (the
    gateway's process) is gone, checked every ``interval`` seconds; returns the thread.

    A gateway killed with SIGKILL (or by the OOM killer) never shuts its pool down, and the
    worker, blocked reading its call queue, would otherwise live on with no parent: one more
    orphan per restart. An orphan is adopted by init or a subreaper, so its parent id changes.
    """
    def watch() -> None:
        while parent_of() == parent:
            sleep(interval)
        leave(0)

    thread = threading.Thread(target=watch, name="json-worker-parent-watch", daemon=True)
    thread.start()
    return thread
