"""Atomic file writes: a file is either its old content or its complete new content, never half."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and then move ``tmp_path`` over ``path`` in one rename.

    The temporary file lives in the same directory so the rename is atomic; it is fsynced first
    so a crash leaves either the old or the new file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, _new_file_mode())  # mkstemp makes 0600; the file gets what open() would give it
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        write(tmp_path)
        with open(tmp_path, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def _new_file_mode() -> int:
    """0o666 less the process umask: the mode a plain ``open(path, "w")`` creates files with."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def finite_json(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float (Python or NumPy) replaced by None, so it is strict JSON.

    A figure that could not be computed (e.g. a metric over no sessions) is ``null`` in the files
    recarena writes, never the bare ``NaN`` that strict JSON parsers refuse.
    """
    if isinstance(obj, float):  # includes numpy.float64
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: finite_json(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(value) for value in obj]
    if hasattr(obj, "dtype") and hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # a NumPy/torch scalar
        return finite_json(obj.item())
    return obj


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented, strict JSON to ``path`` atomically (non-finite floats become ``null``:
    :func:`finite_json`; ``allow_nan=False`` makes any that slipped through an error, not invalid JSON)."""
    text = json.dumps(finite_json(obj), indent=2, sort_keys=True, default=str, allow_nan=False)
    return atomic_write_text(path, text + "\n")
