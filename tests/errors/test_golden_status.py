"""``to_status`` sends, byte for byte, what the committed golden statuses hold.

The fixture (``golden_status.json``, written by ``python -m tests.errors.golden``) was
recorded from the encoder before its rewrite (the hand-written byte writer and the generated
classes). Statuses with a map of two or more entries had no fixed bytes then (see
:mod:`tests.errors.golden`); the encoder now writes maps sorted, so those must equal the
recorded status with its maps sorted, byte for byte, and all others the recorded bytes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from octollm_grpc.status import to_status
from tests.errors import golden

GOLDEN: dict[str, Any] = json.loads(golden.FIXTURE.read_text())
CASES = {name: (make, kwargs) for name, make, kwargs in golden.cases()}


def test_the_fixture_covers_every_case() -> None:
    """Every case has a recorded status and every recorded status a case (regenerate both)."""
    assert sorted(GOLDEN) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_to_status_sends_the_recorded_bytes(name: str) -> None:
    """Code, message, every trailer and the rich status match the recorded ones."""
    make, kwargs = CASES[name]
    expected = GOLDEN[name]
    got = golden.record(to_status(make(), **kwargs))
    assert (got["code"], got["message"]) == (expected["code"], expected["message"])
    assert [k for k, _ in got["trailers"]] == [k for k, _ in expected["trailers"]]
    others = [t for t in got["trailers"] if t[0] != golden.DETAILS_KEY]
    assert others == [t for t in expected["trailers"] if t[0] != golden.DETAILS_KEY]
    data, want = golden.details_bytes(got), golden.details_bytes(expected)
    if kwargs.get("debug"):
        # The traceback differs by checkout: DebugInfo is checked for shape, the rest for bytes.
        data, debug = golden.without_debug(data)
        assert len(debug) == expected["debug_infos"]
        for info in debug:  # only unexpected exceptions carry one
            assert info.stack_entries and info.detail  # type: ignore[attr-defined]
    if expected["multi_entry_map"]:
        # The encoder writes maps sorted: the recorded status, maps sorted, byte for byte.
        assert data == golden.canonical(want)
    else:
        assert data == want
