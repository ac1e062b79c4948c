"""Admin (control plane): the registry of servers, model placement and durable state."""
