"""The rate limiter's bucket store, without a server (a mutation run found it unpinned).

`MemoryStore` on its own (defaults, bound, refill), what a `RateLimiter` hands its store
(scope, key, limit: in that order), the aio entry points `acquire_async` / `check_async`,
the settings that configure only the default store, and the `key_metadata` property.
"""

from __future__ import annotations

import pytest

from octollm_grpc import errors as e
from octollm_grpc.server import RateLimit, RateLimiter
from octollm_grpc.server._ratelimit import BucketStore, MemoryStore
from octollm_grpc.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    """A fresh fake monotonic clock."""
    return FakeClock()


class RecordingStore:
    """A store answering from a script and recording what it was asked, sync and async."""

    def __init__(self, *answers: float) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, str, str, RateLimit]] = []

    def take(self, scope: str, key: str, limit: RateLimit) -> float:
        self.calls.append(("take", scope, key, limit))
        return self.answers.pop(0)

    async def take_async(self, scope: str, key: str, limit: RateLimit) -> float:
        self.calls.append(("take_async", scope, key, limit))
        return self.answers.pop(0)

    def __len__(self) -> int:
        return 7


LIMIT = RateLimit(limit=3, window=60, burst=1)


# -- MemoryStore on its own ------------------------------------------------------------------


def test_memory_store_is_a_bucket_store_with_a_full_bucket_per_new_key(clock: FakeClock) -> None:
    """A new (scope, key) starts with `capacity` tokens; scopes and keys are apart."""
    store = MemoryStore(clock=clock.now)
    assert isinstance(store, BucketStore)
    assert len(store) == 0
    rate = RateLimit(limit=2, window=1)
    assert [store.take("s", "k", rate) for _ in range(3)] == [0.0, 0.0, 0.5]
    assert store.take("s", "other", rate) == 0.0
    assert store.take("other", "k", rate) == 0.0
    assert len(store) == 3


def test_memory_store_refills_by_elapsed_time_up_to_capacity(clock: FakeClock) -> None:
    """Half a token's time gives half a token (the wait halves); idle time stops at capacity."""
    store = MemoryStore(clock=clock.now)
    rate = RateLimit(limit=1, window=4)  # one token per 4 s
    assert store.take("", "k", rate) == 0.0
    assert store.take("", "k", rate) == 4.0
    clock.advance(2.0)
    assert store.take("", "k", rate) == 2.0
    clock.advance(2.0)
    assert store.take("", "k", rate) == 0.0
    clock.advance(3600.0)
    assert [store.take("", "k", rate) for _ in range(2)] == [0.0, 4.0]


async def test_memory_store_take_async_is_take(clock: FakeClock) -> None:
    """The aio entry takes from the same buckets as the sync one."""
    store = MemoryStore(clock=clock.now)
    rate = RateLimit(limit=1, window=2)
    assert await store.take_async("s", "k", rate) == 0.0
    assert store.take("s", "k", rate) == 2.0
    assert await store.take_async("s", "k", rate) == 2.0
    assert await store.take_async("s", "k2", rate) == 0.0
    assert len(store) == 2


def test_memory_store_holds_at_most_max_keys(clock: FakeClock) -> None:
    """With max_keys 2 the third key evicts the least recently used one."""
    store = MemoryStore(max_keys=2, clock=clock.now)
    rate = RateLimit(limit=1, window=60)
    store.take("", "a", rate)
    store.take("", "b", rate)
    assert len(store) == 2
    store.take("", "a", rate)  # a is the most recent now
    store.take("", "c", rate)  # evicts b
    assert len(store) == 2
    assert store.take("", "a", rate) == 60.0  # a kept its (empty) bucket
    assert store.take("", "b", rate) == 0.0  # b came back full


def test_memory_store_defaults_hold_ten_thousand_keys_on_the_monotonic_clock() -> None:
    """MemoryStore() works on time.monotonic and keeps 10 000 buckets, not one more."""
    store = MemoryStore()
    rate = RateLimit(limit=1, window=3600)
    for i in range(10_000):
        assert store.take("", str(i), rate) == 0.0
    assert len(store) == 10_000
    assert 3599.0 < store.take("", "0", rate) <= 3600.0  # still held
    store.take("", "new", rate)
    assert len(store) == 10_000
    assert store.take("", "1", rate) == 0.0  # the least recent went


@pytest.mark.parametrize("max_keys", [0, -1])
def test_memory_store_refuses_no_room(max_keys: int) -> None:
    """A store that could hold no bucket is refused with its value in the message."""
    with pytest.raises(ValueError, match=f"^max_keys must be positive, not {max_keys}$"):
        MemoryStore(max_keys=max_keys)


def test_memory_store_accepts_a_single_key(clock: FakeClock) -> None:
    """max_keys=1 is the smallest valid size: one bucket, replaced by the next key."""
    store = MemoryStore(max_keys=1, clock=clock.now)
    rate = RateLimit(limit=1, window=10)
    assert store.take("", "a", rate) == 0.0
    assert store.take("", "a", rate) == 10.0
    assert store.take("", "b", rate) == 0.0
    assert len(store) == 1
    assert store.take("", "a", rate) == 0.0  # a was evicted: full again


# -- what the limiter hands its store --------------------------------------------------------


def test_acquire_and_check_ask_the_store_with_scope_key_and_limit() -> None:
    """acquire() returns the store's answer; check() raises on a wait, with that wait."""
    store = RecordingStore(0.0, 1.5, 0.0, 0.25)
    limiter = RateLimiter(None, store=store)
    assert limiter.store is store and len(limiter) == 7
    assert limiter.acquire("/a.B/M", LIMIT, "tenant") == 0.0
    assert limiter.acquire("", LIMIT, "peer") == 1.5
    limiter.check("/a.B/M", LIMIT, "tenant")
    with pytest.raises(e.RateLimitError) as caught:
        limiter.check("", LIMIT, "peer")
    assert caught.value.retry_after == 0.25
    assert caught.value.details == {"limit": 3, "window": 60}
    assert caught.value.message == "Rate limit exceeded: 3 requests per 60s"
    assert store.calls == [
        ("take", "/a.B/M", "tenant", LIMIT), ("take", "", "peer", LIMIT),
        ("take", "/a.B/M", "tenant", LIMIT), ("take", "", "peer", LIMIT),
    ]


async def test_acquire_async_and_check_async_ask_the_store_without_blocking() -> None:
    """The aio entries call take_async with the same arguments and answer the same way."""
    store = RecordingStore(0.0, 2.0, 0.0, 0.001)
    limiter = RateLimiter(RateLimit(1), store=store)
    assert await limiter.acquire_async("/a.B/M", LIMIT, "tenant") == 0.0
    assert await limiter.acquire_async("", LIMIT, "peer") == 2.0
    await limiter.check_async("/a.B/M", LIMIT, "tenant")
    with pytest.raises(e.RateLimitError) as caught:
        await limiter.check_async("", LIMIT, "peer")
    assert caught.value.retry_after == 0.001  # a single millisecond is a rejection too
    assert caught.value.details == {"limit": 3, "window": 60}
    assert caught.value.message == "Rate limit exceeded: 3 requests per 60s"
    assert store.calls == [
        ("take_async", "/a.B/M", "tenant", LIMIT), ("take_async", "", "peer", LIMIT),
        ("take_async", "/a.B/M", "tenant", LIMIT), ("take_async", "", "peer", LIMIT),
    ]


async def test_check_async_on_the_default_store(clock: FakeClock) -> None:
    """Without a store the limiter's own MemoryStore answers the aio calls, on its clock."""
    limiter = RateLimiter(LIMIT, clock=clock.now)
    await limiter.check_async("", LIMIT, "k")
    with pytest.raises(e.RateLimitError) as caught:
        await limiter.check_async("", LIMIT, "k")
    assert caught.value.retry_after == 20.0
    clock.advance(20.0)
    assert await limiter.acquire_async("", LIMIT, "k") == 0.0
    assert await limiter.acquire_async("", LIMIT, "k") == 20.0
    assert isinstance(limiter.store, MemoryStore) and len(limiter) == 1


def test_the_default_store_uses_the_monotonic_clock_and_ten_thousand_keys() -> None:
    """RateLimiter(limit) alone: a MemoryStore on time.monotonic holding 10 000 callers."""
    rate = RateLimit(limit=1, window=3600)
    limiter = RateLimiter(rate)
    assert isinstance(limiter.store, MemoryStore)
    for i in range(10_001):
        assert limiter.acquire("", rate, str(i)) == 0.0
    assert len(limiter) == 10_000
    assert limiter.acquire("", rate, "0") == 0.0  # the first was evicted: full again


@pytest.mark.parametrize("kwargs", [
    {"max_keys": 5}, {"clock": FakeClock().now}, {"max_keys": 5, "clock": FakeClock().now},
])
def test_default_store_settings_are_refused_with_a_store(kwargs: dict[str, object]) -> None:
    """max_keys and clock configure the default store: given with store=, they are an error."""
    with pytest.raises(ValueError) as caught:
        RateLimiter(LIMIT, store=MemoryStore(), **kwargs)  # type: ignore[arg-type]
    assert str(caught.value) == ("max_keys and clock configure the default store: "
                                 "give them to the store instead")


def test_a_given_store_is_used_as_is(clock: FakeClock) -> None:
    """A store given to the limiter holds the buckets: its bound and clock apply."""
    store = MemoryStore(max_keys=1, clock=clock.now)
    limiter = RateLimiter(LIMIT, store=store)
    assert limiter.store is store
    limiter.acquire("", LIMIT, "a")
    limiter.acquire("", LIMIT, "b")
    assert len(limiter) == len(store) == 1


# -- key_metadata ------------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "kept"), [
    ("X-Api-Key", "x-api-key"), ("x-tenant-bin", "x-tenant-bin"), (None, None), ("", None),
])
def test_key_metadata_is_kept_in_lower_case(given: str | None, kept: str | None) -> None:
    """The server stack hides the caller key in logs when one is configured: it reads this."""
    assert RateLimiter(LIMIT, key_metadata=given).key_metadata == kept
