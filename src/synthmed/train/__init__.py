"""synthmed.train."""
