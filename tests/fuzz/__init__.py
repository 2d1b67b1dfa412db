"""Fuzzing the API server (``make fuzz``), in a venv of its own."""
