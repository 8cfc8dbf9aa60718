"""training/callbacks."""
