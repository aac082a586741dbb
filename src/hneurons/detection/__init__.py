"""Hallucination detection: evaluation sets, the probe and its baselines, metrics (PAPER.md §5)."""
