"""Text around the model: prompt rendering, token sequences and the label-blind answer-span locator."""
