"""One exception hierarchy for the whole engine.

Every error subclasses :class:`RecsysError` and the builtin it refines, so generic handlers
(``except ValueError``) keep working. Messages say what was wrong, what was expected and the
fix when it is known.
"""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "ConfigError",
    "DataError",
    "DataWarning",
    "FeatureSchemaError",
    "NotFittedError",
    "PerformanceWarning",
    "RecsysError",
]


class RecsysError(Exception):
    """Base class of every error raised by recsys."""


class NotFittedError(RecsysError, AttributeError):
    """A model was used before ``fit`` (or ``load``)."""


class ConfigError(RecsysError, ValueError):
    """A configuration value or key is invalid or unknown."""


class DataError(RecsysError, ValueError):
    """Input data is malformed: missing columns, bad rows, empty files."""


class FeatureSchemaError(RecsysError, ValueError):
    """Features do not match the schema a model or store was built with."""


class ArtifactError(RecsysError, OSError):
    """An artifact directory is missing files, damaged, or of an unknown format."""


class DataWarning(UserWarning):
    """Data was accepted but something about it deserves attention."""


class PerformanceWarning(UserWarning):
    """An operation will be slow or memory-hungry with the given inputs."""


def format_examples(values: object, limit: int = 5) -> str:
    """Format at most ``limit`` offending values for an error message.

    Parameters
    ----------
    values
        Any iterable of offending values (ids, row numbers, column names).
    limit
        How many to show; the rest are summarised as a count.

    Returns
    -------
    str
        For example ``"3, 17, 42 (and 12 more)"``.
    """
    items = list(values)  # type: ignore[call-overload]
    shown = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in items[:limit])
    rest = len(items) - limit
    return f"{shown} (and {rest} more)" if rest > 0 else shown
