"""Text to token ids as the engine sees them: the tokenizer, the chat template, and the prompt a
request becomes. Torch-free, so the gateway tokenizes exactly as the model server does (KV-aware
routing) without importing the engine."""
