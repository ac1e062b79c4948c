"""Gateway: the HTTP front door (Saxml REST + OpenAI API), routing and failover."""
