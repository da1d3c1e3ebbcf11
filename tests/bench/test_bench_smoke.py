"""The benchmark suite's smoke run: every part runs, and the results file is complete."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from benchmarks import report

ROOT = Path(__file__).resolve().parents[2]


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_smoke_run_writes_every_headline_key_as_a_finite_number(tmp_path: Path) -> None:
    """`python -m benchmarks --smoke` exits 0 and its JSON has every headline key, finite."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=110, check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    document = json.loads((tmp_path / "latest.json").read_text())
    markdown = (tmp_path / "latest.md").read_text()

    for stack in ("sync", "aio"):
        for key in report.HEADLINE_STACK_KEYS:
            assert _finite(document[stack][key]), (stack, key, document[stack].get(key))
    for key in report.HEADLINE_STORM_KEYS:
        assert _finite(document[key]), (key, document.get(key))
    assert report.missing_or_not_finite(document) == []
    # The harness counts attempts per logical call: at most one per call without retries (an
    # attempt that times out before reaching the server is not received), more than one with
    # the seed's retries while the server fails everything.
    assert 0.0 < document["storm_amplification_none"] <= 1.0
    assert document["storm_amplification_naive"] > 1.0
    for name, entry in document["codec"].items():
        assert _finite(entry["encode_us"]["median"]) and entry["encode_us"]["median"] > 0, name
        assert _finite(entry["decode_us"]["median"]) and entry["decode_us"]["median"] > 0, name
    for key, value in document["server_python_us"].items():
        assert _finite(value) and value > 0, key
    assert document["machine"]["versions"]["grpcio"] != "absent"
    assert "| server stack, success, 32 in flight |" in markdown
    assert "grpcio " + document["machine"]["versions"]["grpcio"] in markdown
