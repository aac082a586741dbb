"""Interventions: the compliance benchmarks and the α sweep over H-Neurons and random controls."""
