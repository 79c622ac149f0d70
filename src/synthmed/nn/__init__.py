"""synthmed.nn."""
