"""``python -m tests.reliability.faulty_service FLAGS``: the real task service, storage sabotaged.

The fault-injection seam of the leak tests. Everything is the real ``python -m server`` (flags,
interceptors, arm, reflection, health, metrics) except the :class:`~server.store.TaskStore`,
replaced by :class:`FaultyStore`, whose operations named in ``OCTOLLM_TEST_FAULT_OPS``
(comma-separated; default: all) fail as ``OCTOLLM_TEST_FAULT`` says:

- ``runtime``: ``RuntimeError`` whose text holds a secret and a file path (a bug);
- ``oserror``: ``OSError(EACCES)`` naming a file (the disk);
- ``keyerror``: ``KeyError`` of a secret key (a bug);
- ``sqlite``: the SQLite connection itself fails (``sqlite3.OperationalError`` whose text names
  a path), so the store's own error handling runs.

Every message carries :data:`SECRET` and :data:`SECRET_PATH`: neither may reach a client.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import sys
from typing import Any

from server.store import TaskStore

SECRET = "s3cr3t-7731"
SECRET_PATH = "/srv/octollm/private/tasks.db"
OPS = ("create", "transition", "delete", "get", "history", "page")


def make_error(kind: str) -> BaseException:
    """A fresh exception of ``kind``, carrying the secret and the path."""
    if kind == "runtime":
        return RuntimeError(f"{SECRET} leaked while reading {SECRET_PATH}")
    if kind == "oserror":
        return OSError(errno.EACCES, f"Permission denied ({SECRET})", SECRET_PATH)
    if kind == "keyerror":
        return KeyError(f"{SECRET}-key")
    if kind == "sqlite":
        error = sqlite3.OperationalError(f"disk I/O error on {SECRET_PATH} ({SECRET})")
        error.sqlite_errorname = "SQLITE_IOERR"  # as SQLite itself sets it
        return error
    raise ValueError(f"unknown fault kind {kind!r}")


class _FailingConnection:
    """A sqlite3 connection whose statements fail (``BEGIN``/``ROLLBACK`` too)."""

    def __init__(self, real: sqlite3.Connection, kind: str) -> None:
        self._real = real
        self._kind = kind

    def execute(self, *args: Any) -> Any:
        raise make_error(self._kind)

    def close(self) -> None:
        self._real.close()


class FaultyStore(TaskStore):
    """A :class:`TaskStore` whose chosen operations fail with ``kind``'s exception."""

    def __init__(self, path: str, *, kind: str, ops: tuple[str, ...]) -> None:
        super().__init__(path)
        self._kind = kind
        self._ops = ops

    def fail_interrupted(self) -> list[str]:
        """Recover as usual (the service must start), then let the connection fail."""
        recovered = super().fail_interrupted()
        if self._kind == "sqlite":
            self._conn = _FailingConnection(self._conn, self._kind)  # type: ignore[assignment]
        return recovered

    def __getattribute__(self, name: str) -> Any:
        if name in OPS and name in object.__getattribute__(self, "_ops"):
            kind = object.__getattribute__(self, "_kind")
            if kind != "sqlite":
                def fail(*args: Any, **kwargs: Any) -> Any:
                    raise make_error(kind)
                return fail
        return object.__getattribute__(self, name)


def main() -> int:
    """Patch the store the app opens, then run ``python -m server``'s main with our argv."""
    kind = os.environ.get("OCTOLLM_TEST_FAULT", "runtime")
    ops = tuple(o for o in os.environ.get("OCTOLLM_TEST_FAULT_OPS", ",".join(OPS)).split(",")
                if o)
    make_error(kind)  # an unknown kind fails here, before anything starts

    import server.app
    from server.__main__ import main as server_main

    def store(path: str) -> TaskStore:
        return FaultyStore(path, kind=kind, ops=ops)

    server.app.TaskStore = store  # type: ignore[assignment,misc]
    return server_main()


if __name__ == "__main__":
    sys.exit(main())
