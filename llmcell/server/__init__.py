"""Model server: an OpenAI-compatible HTTP API in front of an engine (built-in or external)."""
