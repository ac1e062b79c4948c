"""`llmcell bench`: load against any OpenAI-compatible URL and a report with plots."""
