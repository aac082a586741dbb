"""hneurons: hallucination-associated neurons in Hugging Face causal LMs."""
