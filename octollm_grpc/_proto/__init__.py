"""Generated code for OctoLLM's own protos (``make protos``); do not edit by hand."""
