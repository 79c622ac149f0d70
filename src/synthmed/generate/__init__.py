"""synthmed.generate."""
