"""synthmed.models.gan."""
