"""Kubernetes: size a model onto accelerators (`plan`) and render the cell as manifests (`render`)."""
