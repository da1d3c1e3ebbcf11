"""The octollm-grpc sample task service (``python -m server``), built on octollm_grpc's public API.

Modules: ``config`` (flags), ``app`` (start and graceful stop), ``service`` (the RPCs),
``store`` (SQLite with history), ``validation``, ``messages`` (record <-> proto), ``events``
(WatchTask wake-ups), ``arm`` (the simulated LLM arm), ``arm_client`` (calling it).
"""
