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


class ProviderError(DataEngError):
    """A model provider or transport failed: an HTTP error, a timeout, a refused connection.

    Attributes:
        status_code: The HTTP status, or None when no response came back.
        retryable: Whether the failure was of a kind that is retried (429, 5xx, timeouts);
            when True, the retries were already spent.
    """

    def __init__(self, message: str, status_code: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.status_code = status_code
        self.retryable = retryable
