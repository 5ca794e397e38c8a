"""Exceptions that the CLI turns into a one-line message instead of a traceback."""

from __future__ import annotations


class DriftlibError(RuntimeError):
    """Base class: a failure whose message tells the user what to do."""


class ConfigError(DriftlibError):
    """A configuration value is wrong; the message names the key."""


class DataError(DriftlibError):
    """An input data file is malformed; the message names the file and line or column."""


class ModelError(DriftlibError):
    """A model cannot be loaded or inspected; the message says what was tried."""


class ArtifactError(DriftlibError):
    """An artifact on disk is missing, truncated or does not match what a reader expects."""


class NumericsError(DriftlibError):
    """NaN/Inf or another numerical failure, reported with where it happened."""
