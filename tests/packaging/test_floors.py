"""pyproject.toml's dependency floors are the oldest set CI runs (requirements-oldest.txt)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# protobuf's floor is what the committed generated code accepts (its gencode is 5.27.2); CI's
# oldest set runs protobuf 5.29, the oldest line most pinned environments still carry.
FLOOR_NOT_PINNED = {"protobuf": "5.27.2"}


def floors() -> dict[str, str]:
    """``name -> floor`` of the runtime dependencies and of the [codegen] and [service] extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    found = {}
    for requirement in [*project["dependencies"], *extras["codegen"], *extras["service"]]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)(,<\d+)?", requirement)
        assert match, f"{requirement!r} should read NAME>=FLOOR[,<MAJOR]"
        found[match.group(1)] = match.group(2)
    return found


def oldest_pins() -> dict[str, str]:
    """``name -> version`` pinned in requirements-oldest.txt."""
    pins = {}
    for line in (ROOT / "requirements-oldest.txt").read_text().splitlines():
        name, sep, version = line.split("#", 1)[0].strip().partition("==")
        if sep:
            pins[name] = version
    return pins


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def test_every_floor_is_the_oldest_pin() -> None:
    """Each floor equals its oldest-set pin (same release, padded: 25.5 == 25.5.0)."""
    pins = oldest_pins()
    assert set(floors()) == set(pins)
    for name, floor in floors().items():
        if name in FLOOR_NOT_PINNED:
            assert floor == FLOOR_NOT_PINNED[name]
            assert _release(pins[name]) >= _release(floor)
            continue
        padded = _release(floor) + (0,) * (3 - len(_release(floor)))
        assert padded == _release(pins[name]), name


def test_generated_code_demands_no_newer_protobuf_than_the_floor() -> None:
    """Every committed ``_pb2`` validates a gencode version at or below the protobuf floor."""
    floor = _release(floors()["protobuf"])
    generated = [*ROOT.glob("octollm_grpc/_proto/**/*_pb2.py"),
                 *ROOT.glob("server/gen/**/*_pb2.py")]
    assert generated
    for path in generated:
        match = re.search(r"Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),", path.read_text())
        assert match, path
        assert tuple(map(int, match.groups())) <= floor, path
