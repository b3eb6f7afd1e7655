"""Durable functions: steps whose outcomes are saved in the run store, so a run that resumes or is retried
never runs a saved step again."""
