"""Native kernels for the CPU path, built once per machine and cached; optional (torch fallback)."""
