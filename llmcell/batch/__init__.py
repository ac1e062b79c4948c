"""Batch inference: files and batches kept by the admin, run through the cell (docs/batch.md)."""
