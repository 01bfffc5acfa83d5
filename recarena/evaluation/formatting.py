"""Number and interval formatting shared by the evaluation reports' markdown tables."""

from __future__ import annotations

import math
from typing import Any


def format_number(value: Any, digits: int = 4, nan: str = "n/a") -> str:
    """A float to ``digits`` decimals; ``"n/a"`` for a missing value (None), ``nan`` for NaN, anything
    else (a count, a label) as ``str``."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return nan if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def format_interval(interval: Any, digits: int = 4) -> str:
    """``[low, high]`` of a (low, high) pair, each as :func:`format_number` (``n/a`` where missing)."""
    return f"[{format_number(interval[0], digits)}, {format_number(interval[1], digits)}]"
