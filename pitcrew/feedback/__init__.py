"""Feedback labels in: validation, the idempotent label index, ingestion and its metrics (docs/design.md)."""
