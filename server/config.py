"""The task service's command line: every flag, its default, and the validated settings."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from server.arm import ArmFaults

__all__ = ["Settings", "parse_args"]


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything ``python -m server`` was told; see ``--help`` for each field's meaning."""

    host: str
    port: int
    db: str
    grace: float
    metrics_port: int
    http_port: int
    rate_limit: int
    rate_window: int
    burst: int | None
    auth_token: str | None
    dev: bool
    log_level: str
    arm_target: str | None
    arm_port: int
    arm_faults: ArmFaults
    arm_seed: int | None
    arm_timeout: float
    arm_attempts: int
    arm_breaker_failures: int
    arm_breaker_reset: float
    redis_url: str | None = None
    redis_timeout: float = 0.05
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None

    @property
    def arm_targets(self) -> tuple[str, ...]:
        """``--arm-target`` as a list: the primary arm first, then its fallbacks in order."""
        return _targets(self.arm_target) if self.arm_target else ()


def _targets(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(","))


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="The octollm-grpc sample task service (octollm.tasks.v1.TaskService) "
                    "with its simulated LLM arm.",
    )
    net = parser.add_argument_group("service")
    net.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default: %(default)s)")
    net.add_argument("--port", type=int, default=int(env.get("PORT", "50051")),
                     help="gRPC port; 0 picks a free one (default: env PORT, else 50051)")
    net.add_argument("--db", default=env.get("OCTOLLM_DB", "octollm-tasks.db"),
                     help="SQLite file for tasks; ':memory:' keeps nothing "
                          "(default: env OCTOLLM_DB, else octollm-tasks.db)")
    net.add_argument("--grace", type=float, default=10.0,
                     help="seconds in-flight calls get to finish after SIGTERM/SIGINT "
                          "(default: %(default)s)")
    net.add_argument("--metrics-port", type=int, default=9464,
                     help="port of the Prometheus /metrics endpoint; 0 picks a free one, "
                          "-1 turns it off (default: %(default)s)")
    net.add_argument("--http-port", type=int, default=8080,
                     help="port of the HTTP/JSON gateway (on --host); 0 picks a free one, "
                          "-1 turns it off (default: %(default)s)")
    net.add_argument("--rate-limit", type=int, default=100,
                     help="requests per --rate-window allowed per caller (health checks and "
                          "reflection are exempt); 0 turns rate limiting off "
                          "(default: %(default)s)")
    net.add_argument("--rate-window", type=int, default=1,
                     help="seconds the --rate-limit counts over (default: %(default)s)")
    net.add_argument("--burst", type=int, default=None,
                     help="requests a caller may make at once (default: --rate-limit)")
    net.add_argument("--redis-url", default=env.get("OCTOLLM_REDIS_URL") or None,
                     help="redis://HOST:PORT/DB: keep the rate-limit buckets in this Redis, so "
                          "every replica started with it shares one limit (falls back to this "
                          "process's own buckets while Redis is unreachable) "
                          "(default: env OCTOLLM_REDIS_URL, else per process)")
    net.add_argument("--redis-timeout", type=float, default=0.05,
                     help="seconds a rate-limit decision may wait for Redis before this "
                          "process's own buckets decide it (default: %(default)s)")
    net.add_argument("--auth-token", default=env.get("OCTOLLM_AUTH_TOKEN") or None,
                     help="require 'authorization: Bearer TOKEN' on every call "
                          "(default: env OCTOLLM_AUTH_TOKEN, else no auth)")
    tls = parser.add_argument_group(
        "TLS (off by default: plaintext on loopback)",
        "With --tls-cert and --tls-key, gRPC is served over TLS and the HTTP gateway over "
        "HTTPS with the same certificate (reloaded from disk when it changes; the gateway "
        "reads it at start), and the service calls its arm over TLS. The certificate must "
        "name the address served (e.g. 127.0.0.1); the service's own clients trust the "
        "certificates in --tls-cert and --tls-client-ca, so give the full chain.")
    tls.add_argument("--tls-cert", default=None, metavar="FILE",
                     help="PEM certificate chain of the service (and of the built-in arm)")
    tls.add_argument("--tls-key", default=None, metavar="FILE",
                     help="PEM private key of --tls-cert")
    tls.add_argument("--tls-client-ca", default=None, metavar="FILE",
                     help="PEM CA certificates: require a client certificate they signed "
                          "(mTLS) on gRPC and HTTPS; the service presents --tls-cert to its arm")
    net.add_argument("--dev", action="store_true",
                     help="development mode: unexpected errors carry DebugInfo (traceback)")
    net.add_argument("--log-level", default="info",
                     choices=["debug", "info", "warning", "error", "critical"],
                     help="lowest log level written, as JSON lines on stderr "
                          "(default: %(default)s)")

    arm = parser.add_argument_group("arm (the downstream LLM the service calls)")
    arm.add_argument("--arm-target", default=None,
                     help="HOST:PORT of an arm already running (python -m server.arm), or "
                          "a comma-separated list: the primary, then fallbacks tried in order "
                          "when it is unavailable or its breaker is open; by default the "
                          "built-in arm starts in-process")
    arm.add_argument("--arm-port", type=int, default=0,
                     help="port of the built-in arm; 0 picks a free one (default: %(default)s)")
    arm.add_argument("--arm-failure-rate", type=float, default=0.0,
                     help="built-in arm: share of calls failing with LLM_API_ERROR, 0..1 "
                          "(default: %(default)s)")
    arm.add_argument("--arm-latency-ms", type=float, default=0.0,
                     help="built-in arm: milliseconds every call waits before answering "
                          "(default: %(default)s)")
    arm.add_argument("--arm-down", action="store_true",
                     help="built-in arm: fail every call with UNAVAILABLE (the service then "
                          "reports ARM_UNAVAILABLE)")
    arm.add_argument("--arm-seed", type=int, default=None,
                     help="built-in arm: random seed for --arm-failure-rate")
    arm.add_argument("--arm-timeout", type=float, default=10.0,
                     help="seconds one attempt on the arm may take; an attempt cut by it "
                          "counts against the arm's breaker (default: %(default)s)")
    arm.add_argument("--arm-attempts", type=int, default=3,
                     help="attempts per arm call, counting the first; 1 = no retries "
                          "(default: %(default)s)")
    arm.add_argument("--arm-breaker-failures", type=int, default=5,
                     help="consecutive failed arm calls that open the circuit breaker "
                          "(default: %(default)s)")
    arm.add_argument("--arm-breaker-reset", type=float, default=30.0,
                     help="seconds the breaker stays open before letting a probe through "
                          "(default: %(default)s)")
    return parser


def parse_args(argv: Sequence[str] | None = None,
               env: Mapping[str, str] | None = None) -> Settings:
    """Parse the command line (exits with usage on a bad value, as argparse does)."""
    parser = _parser(os.environ if env is None else env)
    args = parser.parse_args(argv)
    checks = [
        (0 <= args.port <= 65535, "--port must be within 0..65535"),
        (-1 <= args.metrics_port <= 65535, "--metrics-port must be within -1..65535"),
        (-1 <= args.http_port <= 65535, "--http-port must be within -1..65535"),
        (0 <= args.arm_port <= 65535, "--arm-port must be within 0..65535"),
        (args.grace >= 0, "--grace must not be negative"),
        (args.rate_limit >= 0, "--rate-limit must not be negative"),
        (args.rate_window >= 1, "--rate-window must be at least 1"),
        (args.burst is None or args.burst >= 1, "--burst must be at least 1"),
        (args.redis_url is None or args.redis_url.startswith(("redis://", "rediss://", "unix://")),
         "--redis-url must be redis://HOST:PORT/DB (or rediss://, unix://)"),
        (args.redis_url is None or args.rate_limit > 0, "--redis-url needs --rate-limit above 0"),
        (args.redis_timeout > 0, "--redis-timeout must be positive"),
        (args.arm_timeout > 0, "--arm-timeout must be positive"),
        (args.arm_attempts >= 1, "--arm-attempts must be at least 1"),
        (args.arm_breaker_failures >= 1, "--arm-breaker-failures must be at least 1"),
        (args.arm_breaker_reset > 0, "--arm-breaker-reset must be positive"),
        (0 <= args.arm_failure_rate <= 1, "--arm-failure-rate must be within 0..1"),
        (args.arm_latency_ms >= 0, "--arm-latency-ms must not be negative"),
    ]
    checks += [
        ((args.tls_cert is None) == (args.tls_key is None),
         "--tls-cert and --tls-key go together"),
        (args.tls_client_ca is None or args.tls_cert is not None,
         "--tls-client-ca needs --tls-cert and --tls-key"),
    ]
    for path in (args.tls_cert, args.tls_key, args.tls_client_ca):
        checks.append((path is None or os.path.isfile(path), f"no such file: {path}"))
    if args.arm_target:
        targets = _targets(args.arm_target)
        checks += [
            (all(targets), "--arm-target: empty entry in the list"),
            (len(set(targets)) == len(targets), "--arm-target: an arm is listed twice"),
        ]
    for ok, message in checks:
        if not ok:
            parser.error(message)
    faults = ArmFaults(args.arm_failure_rate, args.arm_latency_ms / 1000.0, args.arm_down)
    return Settings(
        host=args.host, port=args.port, db=args.db, grace=args.grace,
        metrics_port=args.metrics_port, http_port=args.http_port,
        rate_limit=args.rate_limit,
        rate_window=args.rate_window, burst=args.burst,
        auth_token=args.auth_token, dev=args.dev, log_level=args.log_level,
        arm_target=(",".join(_targets(args.arm_target)) if args.arm_target else None),
        arm_port=args.arm_port, arm_faults=faults,
        arm_seed=args.arm_seed, arm_timeout=args.arm_timeout, arm_attempts=args.arm_attempts,
        arm_breaker_failures=args.arm_breaker_failures,
        arm_breaker_reset=args.arm_breaker_reset,
        redis_url=args.redis_url, redis_timeout=args.redis_timeout,
        tls_cert=args.tls_cert, tls_key=args.tls_key, tls_client_ca=args.tls_client_ca,
    )
