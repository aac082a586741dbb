"""Hallucination detection (the paper, arXiv 2512.01797, §5): evaluation sets (:mod:`~hneurons.detection.eval_sets`),
the probe's baselines (:mod:`~hneurons.detection.methods`, :mod:`~hneurons.detection.token_stats`), their training
data (:mod:`~hneurons.detection.training`), metrics (:mod:`~hneurons.detection.metrics`) and the per-set
evaluation (:mod:`~hneurons.detection.evaluate`)."""
