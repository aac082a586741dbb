"""Hallucination detection: evaluation sets, the probe and its baselines, metrics (the paper, arXiv 2512.01797, §5)."""
