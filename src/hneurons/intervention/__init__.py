"""Interventions: the benchmarks (one module each, registered in :mod:`~hneurons.intervention.tasks`) and the α sweep
over H-Neurons and random controls; the ``qa`` family (:mod:`~hneurons.intervention.qa`) measures plain question answering."""
