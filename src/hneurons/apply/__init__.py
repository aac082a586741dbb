"""A fitted run on new text: scoring (question, answer) pairs, guarded generation and the server."""
