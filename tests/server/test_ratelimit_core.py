"""The rate limiter's arithmetic and keys, without a server: refill speeds, scopes, binary keys,
eviction order, the accepted edge values and the messages of rejected settings."""

from __future__ import annotations

import pytest

from octollm_grpc import errors as e
from octollm_grpc.server import RateLimit, RateLimiter
from octollm_grpc.server._ratelimit import peer_host
from octollm_grpc.testing import FakeClock

PEER = "ipv4:10.0.0.1:5555"


@pytest.fixture
def clock() -> FakeClock:
    """A fresh fake monotonic clock."""
    return FakeClock()


def _peer() -> str:
    return PEER


@pytest.mark.parametrize(("limit", "window", "burst", "step", "wait"), [
    (10, 1, 2, 0.1, 0.1),  # 10 tokens/s: one every 100 ms
    (3, 2, 1, 2 / 3, 0.667),  # 1.5 tokens/s, wait rounded up to whole ms
    (1, 60, 1, 60.0, 60.0),  # a minute per token
])
def test_refill_speed_follows_limit_over_window(clock: FakeClock, limit: int, window: int,
                                                burst: int, step: float, wait: float) -> None:
    """After the burst, one token comes back every window/limit seconds, no sooner."""
    limiter = RateLimiter(RateLimit(limit, window, burst), clock=clock.now)
    rate = RateLimit(limit, window, burst)
    assert rate.rate == limit / window and rate.capacity == burst
    for _ in range(burst):
        assert limiter.acquire("", rate, "k") == 0.0
    assert limiter.acquire("", rate, "k") == wait
    clock.advance(step * 0.9)
    assert 0.0 < limiter.acquire("", rate, "k") < wait
    clock.advance(step * 0.1 + 1e-9)
    assert limiter.acquire("", rate, "k") == 0.0
    assert limiter.acquire("", rate, "k") > 0.0


def test_burst_defaults_to_the_limit_and_refill_stops_there(clock: FakeClock) -> None:
    """Without burst the bucket holds `limit` tokens; idle time never adds more."""
    rate = RateLimit(limit=4, window=2)
    assert rate.capacity == 4 and rate.burst is None
    limiter = RateLimiter(rate, clock=clock.now)
    assert [limiter.acquire("", rate, "k") for _ in range(5)] == [0.0] * 4 + [0.5]
    clock.advance(1000)
    assert [limiter.acquire("", rate, "k") for _ in range(5)] == [0.0] * 4 + [0.5]


def test_a_clock_that_does_not_move_adds_nothing(clock: FakeClock) -> None:
    """Two calls at the same instant: the second sees no refill."""
    rate = RateLimit(limit=1, burst=1)
    limiter = RateLimiter(rate, clock=clock.now)
    assert limiter.acquire("", rate, "k") == 0.0
    assert limiter.acquire("", rate, "k") == 1.0
    assert limiter.acquire("", rate, "k") == 1.0


def test_check_keeps_scopes_apart(clock: FakeClock) -> None:
    """check() takes from the scope's own bucket: one scope's rejection leaves another's open."""
    rate = RateLimit(limit=2, window=10, burst=1)
    limiter = RateLimiter(rate, clock=clock.now)
    limiter.check("/a.B/One", rate, "k")
    with pytest.raises(e.RateLimitError) as caught:
        limiter.check("/a.B/One", rate, "k")
    assert caught.value.retry_after == 5.0
    assert caught.value.details == {"limit": 2, "window": 10}
    assert caught.value.message == "Rate limit exceeded: 2 requests per 10s"
    fast = RateLimit(limit=4, burst=1)
    limiter.check("", fast, "k")
    with pytest.raises(e.RateLimitError) as caught:
        limiter.check("", fast, "k")  # a wait under a second is a rejection too
    assert caught.value.retry_after == 0.25
    limiter.check("/a.B/Two", rate, "k")  # its own bucket: passes
    limiter.check("/a.B/One", rate, "other")  # another caller: passes
    assert len(limiter) == 4


def test_binary_metadata_keys_get_a_bucket_each(clock: FakeClock) -> None:
    """Callers keyed by a binary (-bin) value get one bucket per value, not one for all."""
    rate = RateLimit(limit=1, burst=1)
    limiter = RateLimiter(rate, key_metadata="x-tenant-bin", clock=clock.now)
    first = limiter.key_for([("x-tenant-bin", b"\x01")], _peer)
    second = limiter.key_for([("x-tenant-bin", b"\x02")], _peer)
    assert first != second
    assert first == repr(b"\x01")  # bucket keys are text
    assert first == limiter.key_for((("other", "v"), ("x-tenant-bin", b"\x01")), _peer)
    assert limiter.acquire("", rate, first) == 0.0
    assert limiter.acquire("", rate, second) == 0.0
    assert limiter.acquire("", rate, first) == 1.0


def test_key_metadata_name_is_case_insensitive_and_falls_back_to_the_peer() -> None:
    """The configured name matches gRPC's lower-case keys; without it, the peer host is used."""
    limiter = RateLimiter(RateLimit(1), key_metadata="X-Api-Key")
    assert limiter.key_for([("x-api-key", "tenant-1")], _peer) == "tenant-1"
    assert limiter.key_for([], _peer) == "ipv4:10.0.0.1"
    assert limiter.key_for(None, _peer) == "ipv4:10.0.0.1"
    unkeyed = RateLimiter(RateLimit(1))
    assert unkeyed.key_for([("x-api-key", "tenant-1")], _peer) == "ipv4:10.0.0.1"


@pytest.mark.parametrize(("peer", "host"), [
    ("ipv4:10.0.0.1:5555", "ipv4:10.0.0.1"),
    ("ipv6:[::1]:4242", "ipv6:[::1]"),
    ("ipv6:[::1]", "ipv6:[::1]"),  # no port: unchanged
    ("ipv4:10.0.0.1:http", "ipv4:10.0.0.1:http"),  # not a port number
    ("ipv4:5555", "ipv4:5555"),  # nothing but a port: keep it whole
    ("ipv6:5555", "ipv6:5555"),
    ("unix:/tmp/sock:1", "unix:/tmp/sock:1"),
    ("", ""),
])
def test_peer_host_drops_only_a_numeric_port(peer: str, host: str) -> None:
    """New connections of one host share its bucket; odd peers are kept whole."""
    assert peer_host(peer) == host


def test_eviction_drops_the_least_recently_used_caller(clock: FakeClock) -> None:
    """With max_keys 2, using an old caller keeps it; the caller idle longest goes."""
    rate = RateLimit(limit=1, burst=1)
    limiter = RateLimiter(rate, max_keys=2, clock=clock.now)
    limiter.acquire("", rate, "a")
    limiter.acquire("", rate, "b")
    assert limiter.acquire("", rate, "a") == 1.0  # a is now the most recent
    limiter.acquire("", rate, "c")  # evicts b
    assert len(limiter) == 2
    assert limiter.acquire("", rate, "a") == 1.0  # still remembered
    assert limiter.acquire("", rate, "b") == 0.0  # came back with a full bucket (evicts c)
    single = RateLimiter(rate, max_keys=1, clock=clock.now)
    single.acquire("", rate, "a")
    single.acquire("", rate, "b")
    assert len(single) == 1


def test_method_limits_and_exemptions(clock: FakeClock) -> None:
    """A method's own limit is its own scope; None exempts it; no default leaves the rest free."""
    own = RateLimit(limit=5)
    limiter = RateLimiter(RateLimit(1), methods={"/a.B/Own": own, "/a.B/Free": None})
    assert limiter.limit_for("/a.B/Own") == ("/a.B/Own", own)
    assert limiter.limit_for("/a.B/Other") == ("", RateLimit(1))
    assert limiter.limit_for("/a.B/Free") is None
    only = RateLimiter(None, methods={"/a.B/Own": own})
    assert only.limit_for("/a.B/Own") == ("/a.B/Own", own)
    assert only.limit_for("/a.B/Other") is None


def test_accepted_edge_values() -> None:
    """The smallest valid limit, window, burst and max_keys are accepted."""
    rate = RateLimit(limit=1, window=1, burst=1)
    assert (rate.rate, rate.capacity) == (1.0, 1)
    assert RateLimit(limit=1, burst=None).capacity == 1
    assert len(RateLimiter(rate, max_keys=1)) == 0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"limit": 0}, "limit must be a positive int, not 0"),
    ({"limit": 2.0}, "limit must be a positive int, not 2.0"),
    ({"limit": True}, "limit must be a positive int, not True"),
    ({"limit": 1, "window": 0}, "window must be a positive int of seconds, not 0"),
    ({"limit": 1, "window": 1.5}, "window must be a positive int of seconds, not 1.5"),
    ({"limit": 1, "window": False}, "window must be a positive int of seconds, not False"),
    ({"limit": 1, "burst": 0}, "burst must be a positive int or None, not 0"),
    ({"limit": 1, "burst": 2.5}, "burst must be a positive int or None, not 2.5"),
    ({"limit": 1, "burst": True}, "burst must be a positive int or None, not True"),
])
def test_invalid_limits_are_refused_with_a_message(kwargs: dict[str, object],
                                                   message: str) -> None:
    """Each invalid field is named in the error."""
    with pytest.raises(ValueError, match=message):
        RateLimit(**kwargs)  # type: ignore[arg-type]


def test_ten_thousand_callers_are_held_by_default(clock: FakeClock) -> None:
    """max_keys defaults to 10 000: the 10 001st caller evicts the first."""
    rate = RateLimit(limit=1, burst=1)
    limiter = RateLimiter(rate, clock=clock.now)
    for i in range(10_000):
        limiter.acquire("", rate, str(i))
    assert len(limiter) == 10_000
    assert limiter.acquire("", rate, "0") == 1.0  # still held (and now the most recent)
    limiter.acquire("", rate, "new")
    assert len(limiter) == 10_000
    assert limiter.acquire("", rate, "1") == 0.0  # the least recent was evicted


def test_max_keys_must_be_positive() -> None:
    """A limiter that could hold no bucket is refused."""
    with pytest.raises(ValueError, match="max_keys must be positive, not 0"):
        RateLimiter(RateLimit(1), max_keys=0)
