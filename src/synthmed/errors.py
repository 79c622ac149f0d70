"""Errors meant for people: one message that names the file or key and what was expected."""

from __future__ import annotations


class SynthmedError(Exception):
    """An error caused by the user's input (files, config, arguments).

    The CLI prints ``str(error)`` without a traceback and exits with status 2.
    """


class ConfigError(SynthmedError):
    """A config key is unknown, has the wrong type or an invalid value."""


class DataError(SynthmedError):
    """An input file or folder is missing, corrupt or does not fit what was expected."""


class CheckpointError(SynthmedError):
    """A checkpoint is missing, corrupt or belongs to another model."""


class TrainingDiverged(SynthmedError):
    """Training produced NaN/Inf or diverged; the last good checkpoint is kept."""
