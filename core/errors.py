"""Errors, named by the boundary where they happened.

Each message says what was expected, what was found, and how to fix it.
"""


class DataEngError(Exception):
    """Root of every error dataeng-gym raises on purpose."""


class ConfigError(DataEngError, ValueError):
    """A configuration value is out of range or inconsistent."""


class MissingExtraError(DataEngError, ImportError):
    """An optional dependency is needed but not installed."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package!r} is not installed; install it with: pip install 'dataeng-gym[{extra}]'"
        )


class StudentError(DataEngError):
    """Student training or evaluation failed."""
