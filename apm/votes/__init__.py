"""Vote histograms: distributions and their fits, metrics, baselines."""
