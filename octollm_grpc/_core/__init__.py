"""Grpc-free state machines shared by the gRPC client and the resilience helpers: the
circuit breaker, the backoff formula and the retry budget, and the server's adaptive concurrency
limit (`.gradient`) (private; no public names)."""
