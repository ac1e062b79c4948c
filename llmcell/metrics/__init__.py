"""Metrics of the cell: alert rules and the Grafana dashboard shipped with the package."""
