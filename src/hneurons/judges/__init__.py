"""Verdicts on responses: the offline rule judges, the trained classifiers and the LLM judge."""
