"""synthmed.data."""
