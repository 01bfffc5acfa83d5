"""Logged interactions: the typed structures, the loaders of every supported format, and the splits."""

from recarena.data.interactions import LIKE_THRESHOLD, InteractionLog, ItemMetadata, LogSplit
from recarena.data.logs import LoadReport, LoadWarning, load_logs, register_format
from recarena.data.spec import DataSpec, data_spec, load_data
from recarena.data.splits import k_core, leave_last_out, temporal_split, user_last_split, validation_split

__all__ = [
    "LIKE_THRESHOLD",
    "DataSpec",
    "InteractionLog",
    "ItemMetadata",
    "LoadReport",
    "LoadWarning",
    "LogSplit",
    "k_core",
    "data_spec",
    "leave_last_out",
    "load_data",
    "load_logs",
    "register_format",
    "temporal_split",
    "user_last_split",
    "validation_split",
]
