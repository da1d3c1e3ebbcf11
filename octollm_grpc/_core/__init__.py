"""Grpc-free state machines shared by the gRPC client and the resilience helpers: the
circuit breaker, the backoff formula and the retry budget (private; no public names)."""
