"""Observability: request ids, call logging, metrics, propagation and tracing."""
