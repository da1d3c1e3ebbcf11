"""``python -m benchmarks`` (``make bench``): run the suite, write ``results/latest.{json,md}``.

``--smoke`` runs every part for a fraction of a second (no targets asserted) and writes to a
temporary directory unless ``--out`` is given, so it never replaces the committed results.
``--update-readme`` copies ``latest.md`` into docs/performance.md (once the README's section).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import (
    brownout,
    codec,
    hedging,
    instructions,
    overhead,
    pathcost,
    procs,
    readme,
    report,
    storm,
)
from benchmarks.config import FULL, SMOKE, BenchConfig

RESULTS = Path(__file__).resolve().parent / "results"


def _finite_or_none(value: Any) -> Any:
    # JSON has no NaN or Infinity: an undefined figure is written as null.
    if isinstance(value, float):
        # Five significant digits: far below the noise, and the file stays readable.
        return float(f"{value:.5g}") if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def run(config: BenchConfig, log: Any = print) -> dict[str, Any]:
    """Run every part of the suite with ``config``; return the results document."""
    started = time.monotonic()
    document: dict[str, Any] = {
        "schema": 1,
        "mode": config.name,
        "generated_at": report.now_utc(),
        "definitions": report.DEFINITIONS,
        "machine": report.machine(),
        "config": {**asdict(config), "storm": {
            **asdict(config.storm), "scale": config.storm.scale,
            "capacity": config.storm.capacity}},
    }
    runs = []
    for number in range(config.ir_runs):
        log(f"instructions per call (callgrind), run {number + 1} of {config.ir_runs}")
        runs.append(instructions.run(config.ir_calls, config.ir_warmup, log=log))
    if runs:
        document["instructions"] = {
            "runs": runs,
            "max_relative_difference": max(
                (instructions.max_relative_difference(runs[0], other) for other in runs[1:]),
                default=0.0),
        }
    log("codec: encode/decode per error; Python time of the sync server stack per call")
    document["codec"] = codec.run(config.codec_repeat, config.codec_number)
    document["server_python_us"] = pathcost.run(config.codec_repeat, config.codec_number)
    for stack in ("sync", "aio"):
        log(f"overhead: {stack} (client and servers in separate processes)")
        raw = procs.run_in_process(overhead.run_phase, stack, config)
        detail = overhead.summarise(raw)
        document[stack] = {**report.stack_headlines(detail), "detail": detail, "raw": raw}
        if runs:
            # The headline counts are the first run's; the others are under "instructions".
            document[stack].update(instructions.headlines(runs[0][stack]))
            document[stack]["ir"] = runs[0][stack]
    log(f"storm: {', '.join(config.storm_modes)} x none, naive, ours")
    document["storm"] = storm.run(config.storm, config.storm_modes)
    document.update(report.storm_headlines(document["storm"], config.storm.breaker_reset_s))
    log("brownout: our server stack with and without the concurrency limit, sync and aio")
    document["brownout"] = brownout.run(brownout.SMOKE if config.name == "smoke"
                                        else brownout.FULL)
    for stack in brownout.STACKS:
        document[stack].update(brownout.headlines(document["brownout"], stack))
    log("hedging: sync and aio clients, 5% of attempts stalled; outage amplification")
    document["hedging"] = hedging.run(config.hedging)
    document.update(hedging.headlines(document["hedging"]))
    document["targets"] = report.targets(document)
    document["load_average_at_end"] = report.load_average()
    document["duration_s"] = round(time.monotonic() - started, 1)
    return document


def write(document: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write ``latest.json`` and ``latest.md`` into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "latest.json", out / "latest.md"
    json_path.write_text(
        json.dumps(_finite_or_none(document), indent=1, allow_nan=False) + "\n")
    md_path.write_text(report.markdown(document))
    return json_path, md_path


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--smoke", action="store_true",
                        help="every part for a fraction of a second; no targets asserted")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: benchmarks/results, or a temporary "
                             "directory with --smoke)")
    parser.add_argument("--update-readme", action="store_true",
                        help="only copy results/latest.md into docs/performance.md")
    args = parser.parse_args(argv)
    if args.update_readme:
        readme.update(RESULTS / "latest.md")
        return 0
    config = SMOKE if args.smoke else FULL
    out = args.out or (Path(tempfile.gettempdir()) / "octollm-bench-smoke" if args.smoke
                       else RESULTS)
    document = run(config, log=lambda text: print(f"[bench] {text}", file=sys.stderr, flush=True))
    json_path, md_path = write(document, out)
    bad = report.missing_or_not_finite(document)
    print(report.markdown(document))
    print(f"[bench] wrote {json_path} and {md_path} in {document['duration_s']} s "
          f"({os.cpu_count()} cores)", file=sys.stderr)
    if bad:
        print(f"[bench] missing or not finite: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
