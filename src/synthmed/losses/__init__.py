"""synthmed.losses."""
