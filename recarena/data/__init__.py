"""Logged interactions: the typed structures, the loaders of every supported format, and the splits."""

from recarena.data.interactions import LIKE_THRESHOLD, InteractionLog, ItemMetadata, LogSplit
from recarena.data.logs import LoadReport, LoadWarning, load_logs, register_format
from recarena.data.spec import DataSpec, data_spec, load_data
from recarena.data.splits import (
    TRAINING_SPLITS,
    k_core,
    leave_last_out,
    split_log,
    temporal_split,
    user_last_split,
    validation_split,
)

__all__ = [
    "LIKE_THRESHOLD",
    "TRAINING_SPLITS",
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
    "split_log",
    "temporal_split",
    "user_last_split",
    "validation_split",
]
