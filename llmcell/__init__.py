"""llmcell: serve large language models as a Saxml-style cell (admin, model servers, gateway)."""

__version__ = "0.1.0"
