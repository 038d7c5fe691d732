"""The experiment config's error type."""

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A configuration problem, with a one-line message that names the field."""
