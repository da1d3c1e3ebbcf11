"""The client factories' keywords: said once, checked by mypy at the caller, same defaults."""

from __future__ import annotations

import asyncio
import textwrap
import time
from pathlib import Path

import pytest
from mypy import api as mypy_api

from octollm_grpc.client import aio, resilient_channel, resilient_interceptors
from octollm_grpc.client._channel import (
    DEFAULT,
    AioClientOptions,
    SyncChannelKeywords,
    SyncClientOptions,
    SyncKeywords,
)
from octollm_grpc.client.aio import AioChannelKeywords, AioKeywords

#: What every factory accepted as keywords before the options object (the public contract).
RESILIENCE = {"retry", "budget", "breaker", "config", "clock", "sleep", "rng", "registry"}
CHANNEL = RESILIENCE | {"credentials", "options", "compression"}


def test_every_factory_keeps_its_keywords() -> None:
    """The keyword sets of the four factories are exactly those they took as parameters."""
    assert SyncKeywords.__optional_keys__ == RESILIENCE
    assert AioKeywords.__optional_keys__ == RESILIENCE
    assert SyncChannelKeywords.__optional_keys__ == CHANNEL
    assert AioChannelKeywords.__optional_keys__ == CHANNEL


def test_defaults_are_the_documented_ones() -> None:
    """Unset keywords mean the config's or the product default, a real clock and sleep."""
    sync = SyncClientOptions(target="t")
    aio_options = AioClientOptions(target="t")
    for options in (sync, aio_options):
        assert options.retry is DEFAULT and options.budget is DEFAULT
        assert options.breaker is DEFAULT
        assert options.config is None and options.rng is None and options.registry is None
        assert options.clock is time.monotonic
        assert options.credentials is None and options.options == ()
        assert options.compression is None
    assert sync.sleep is time.sleep
    assert aio_options.sleep is asyncio.sleep


def test_options_are_frozen() -> None:
    """An options object cannot change after the stack is built from it."""
    options = SyncClientOptions(target="t")
    with pytest.raises(AttributeError):
        options.retry = None  # type: ignore[misc]


def test_unknown_keyword_is_a_type_error() -> None:
    """A misspelt keyword fails at once, as it did with explicit parameters."""
    with pytest.raises(TypeError, match="retri"):
        resilient_channel("127.0.0.1:1", retri=None)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="options"):
        resilient_interceptors("127.0.0.1:1", options=())  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="credentials"):
        aio.resilient_interceptors("127.0.0.1:1", credentials=None)  # type: ignore[call-arg]


def test_mypy_checks_callers_keywords(tmp_path: Path) -> None:
    """mypy --strict rejects a misspelt keyword and a sleep of the wrong stack."""
    source = tmp_path / "caller.py"
    source.write_text(textwrap.dedent("""
        import asyncio
        import time
        from octollm_grpc.client import resilient_channel
        from octollm_grpc.client import aio
        resilient_channel("x", retry=None, sleep=time.sleep, options=[("a", 1)])
        resilient_channel("x", retri=None)
        resilient_channel("x", sleep=asyncio.sleep)
        aio.resilient_channel("x", sleep=time.sleep)
        aio.resilient_interceptors("x", credentials=None)
    """))
    out, _err, status = mypy_api.run(["--strict", "--no-incremental", "--follow-imports=silent",
                                      str(source)])
    assert status == 1, out
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert [int(line.split(":")[1]) for line in errors] == [7, 8, 9, 10], out
