"""Training APM on Ray Train: data ingest, the per-worker loop, the trainer."""
