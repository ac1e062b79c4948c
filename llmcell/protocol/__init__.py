"""Wire types only: OpenAI request parsing and response shapes, error bodies. Imports nothing of ours."""
