"""The Makefile's front door: `make` lists the targets, `make clean` leaves no run behind."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def make(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run make with ``args`` in ``cwd``; fail the test if make fails."""
    return subprocess.run(["make", "--no-print-directory", *args], cwd=cwd, capture_output=True,
                          text=True, check=True, timeout=60)


def test_make_alone_lists_the_targets() -> None:
    """`make` is `make help`: every documented target, each a real rule; no dead bench-smoke."""
    listed = re.findall(r"^  ([a-z-]+) +\S", make().stdout, flags=re.M)
    assert {"help", "install", "run", "test", "lint", "docs", "dist", "protos", "bench",
            "clean", "oldest"} <= set(listed)
    assert "bench-smoke" not in (ROOT / "Makefile").read_text()
    for target in listed:
        make("-n", target)  # dry run: make knows how to build it


def test_clean_removes_what_make_run_leaves(tmp_path: Path) -> None:
    """`make clean` deletes the sample's SQLite files (and its WAL) and the build output."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    left = ["octollm-tasks.db", "octollm-tasks.db-wal", "octollm-tasks.db-shm", "other.db",
            "dist/octollm_grpc-0.1.0.tar.gz", ".venv/bin/python", ".build/site/index.html",
            ".nox/oldest/x"]
    kept = ["README.md", "protos/octollm/errors/v1/errors.proto"]
    for name in left + kept:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    make("clean", cwd=tmp_path)
    assert [name for name in left if (tmp_path / name).exists()] == []
    assert all((tmp_path / name).exists() for name in kept)
