"""Retry policies: one frozen, validated [`RetryPolicy`][octollm_grpc.client.RetryPolicy], chosen
per method.

A [`RetryPolicies`][octollm_grpc.client.RetryPolicies] maps method names the way a gRPC service
config's ``methodConfig``
does (``"pkg.Service/Method"`` beats ``"pkg.Service"`` beats the default), so idempotent methods
can be retried while others are not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import grpc

from octollm_grpc._core.backoff import backoff_ceiling, positive
from octollm_grpc.codes import CLIENT_RETRIED, PUSHBACK_RETRIED

__all__ = ["NEVER_RETRIED", "RetryPolicies", "RetryPolicy", "status_codes"]

_C = grpc.StatusCode

#: Codes no policy may retry: success, and a caller's own cancellation.
NEVER_RETRIED = frozenset({_C.OK, _C.CANCELLED})


def status_codes(
    values: Iterable[grpc.StatusCode | str | int], what: str
) -> frozenset[grpc.StatusCode]:
    """``values`` as status codes; names (``"UNAVAILABLE"``) and numbers (14) are accepted."""
    if isinstance(values, (str, grpc.StatusCode)):
        values = [values]
    by_number = {code.value[0]: code for code in _C}
    codes: set[grpc.StatusCode] = set()
    for value in values:
        if isinstance(value, grpc.StatusCode):
            codes.add(value)
        elif isinstance(value, str) and value.upper() in _C.__members__:
            codes.add(_C.__members__[value.upper()])
        elif isinstance(value, int) and not isinstance(value, bool) and value in by_number:
            codes.add(by_number[value])
        else:
            raise ValueError(f"{what}: {value!r} is not a gRPC status code")
    return frozenset(codes)


_positive = positive


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How one method's calls are retried (gRFC A6 semantics, plus a per-attempt timeout).

    Times are seconds. Attempt ``n`` (the first retry is ``n = 1``) waits a delay drawn
    uniformly from ``[0, min(initial_backoff * backoff_multiplier ** (n - 1), max_backoff)]``
    unless the server said how long to wait. ``retryable_codes`` are retried always;
    ``pushback_codes`` only when the server sent ``grpc-retry-pushback-ms`` or ``RetryInfo``
    (a server wait over ``max_pushback`` is not retried).
    Client- and bidi-streaming calls are retried only when ``replayable_requests`` is true
    (their request stream is then buffered and replayed).

    Args:
        max_attempts: Attempts in all, the first included (``RetryPolicy(max_attempts=3)``
            makes 3; ``retry_with_backoff(max_retries=3)`` makes 4).
        initial_backoff: The first retry's delay ceiling, in seconds.
        max_backoff: The largest delay ceiling.
        backoff_multiplier: The ceiling's growth per retry.
        retryable_codes: Status codes retried (default ``UNAVAILABLE``, from
            ``octollm_grpc.codes.CODE_BEHAVIOUR``).
        pushback_codes: Status codes retried only when the server sent pushback (default
            ``RESOURCE_EXHAUSTED``, from the same table).
        per_attempt_timeout: Seconds each attempt may take (``None``: the call's deadline).
        replayable_requests: Retry client-streaming calls by replaying the requests sent.
        max_pushback: The longest server-requested wait honoured.

    Raises:
        TypeError: A value of the wrong type.
        ValueError: A value out of range, or ``OK`` / ``CANCELLED`` among the codes.
    """

    max_attempts: int = 3
    """Attempts in all, counting the first; 1 turns retries off."""
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    backoff_multiplier: float = 2.0
    # Defaults from the one table of code behaviour (octollm_grpc.codes.CODE_BEHAVIOUR).
    retryable_codes: frozenset[grpc.StatusCode] = CLIENT_RETRIED
    pushback_codes: frozenset[grpc.StatusCode] = PUSHBACK_RETRIED
    per_attempt_timeout: float | None = None
    """Cap on each attempt's time (the caller's deadline still covers all attempts)."""
    replayable_requests: bool = False
    max_pushback: float = 30.0
    """Longest server-requested wait honoured; a longer one ends the call at once with the
    typed error, its ``retry_after`` the server's advice (a call without a deadline never
    sleeps for a day)."""

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError(f"max_attempts must be an int, not {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise ValueError(
                f"max_attempts counts the first attempt: >= 1, not {self.max_attempts}")
        _positive("initial_backoff", self.initial_backoff)
        _positive("max_backoff", self.max_backoff)
        _positive("backoff_multiplier", self.backoff_multiplier)
        if self.max_backoff < self.initial_backoff:
            raise ValueError("max_backoff must be >= initial_backoff")
        if self.per_attempt_timeout is not None:
            _positive("per_attempt_timeout", self.per_attempt_timeout)
        _positive("max_pushback", self.max_pushback)
        for name in ("retryable_codes", "pushback_codes"):
            codes = status_codes(getattr(self, name), name)
            bad = codes & NEVER_RETRIED
            if bad:
                raise ValueError(f"{name} may not contain {sorted(c.name for c in bad)}: "
                                 "success and a caller's cancellation are never retried")
            object.__setattr__(self, name, codes)

    def backoff_ceiling(self, retry: int) -> float:
        """The upper bound of the jittered delay before retry number ``retry`` (1-based).

        Args:
            retry: The retry's number, 1 for the first retry.

        Returns:
            ``min(initial_backoff * backoff_multiplier ** (retry - 1), max_backoff)``.
        """
        return backoff_ceiling(self.initial_backoff, self.max_backoff, self.backoff_multiplier,
                               retry)


_DEFAULT = RetryPolicy()


def _method_key(name: str) -> str:
    return name[1:] if name.startswith("/") else name


@dataclass(frozen=True, slots=True)
class RetryPolicies:
    """Retry policies by method, like a service config's ``methodConfig``.

    ``methods`` keys are ``"pkg.Service/Method"`` or ``"pkg.Service"`` (every method of the
    service); a value of ``None`` means "never retry". Lookup: exact method, then service, then
    ``default`` (``None`` there turns retries off for everything not listed).

    Args:
        default: The policy of every method not listed (``None``: no retries).
        methods: Policies by ``"pkg.Service/Method"`` or ``"pkg.Service"``.

    Raises:
        TypeError: A value that is not a ``RetryPolicy`` or ``None``.
    """

    default: RetryPolicy | None = _DEFAULT
    methods: Mapping[str, RetryPolicy | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.default is not None and not isinstance(self.default, RetryPolicy):
            raise TypeError(f"default must be a RetryPolicy or None, not {self.default!r}")
        cleaned: dict[str, RetryPolicy | None] = {}
        for name, policy in self.methods.items():
            key = _method_key(name)
            if not key or key.endswith("/") or key.count("/") > 1:
                raise ValueError(f"method name {name!r}: use 'pkg.Service' or 'pkg.Service/Method'")
            if policy is not None and not isinstance(policy, RetryPolicy):
                raise TypeError(f"policy for {name!r} must be a RetryPolicy or None")
            cleaned[key] = policy
        object.__setattr__(self, "methods", MappingProxyType(cleaned))

    def policy_for(self, method: str) -> RetryPolicy | None:
        """The policy for a full method name (``"/pkg.Service/Method"``), or ``None``."""
        key = _method_key(method)
        if key in self.methods:
            return self.methods[key]
        service = key.rpartition("/")[0]
        if service in self.methods:
            return self.methods[service]
        return self.default
