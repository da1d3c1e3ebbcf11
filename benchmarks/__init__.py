"""Benchmarks for octollm-grpc: overhead against bare grpcio and its peers, and retry storms.

Run ``python -m benchmarks`` (``make bench``) for the full suite, which writes
``benchmarks/results/latest.json`` and ``latest.md``; ``python -m benchmarks --smoke`` runs every
part for a fraction of a second each, to prove the harness works (no targets asserted).
"""
