"""User simulators built from real logged interactions and an LLM-derived preference model."""

from simulators.base import Simulator, StepOutcome, UserState
from simulators.behaviour import (
    REWARDS,
    BehaviourConfig,
    ChoiceConfig,
    InterestConfig,
    LeaveConfig,
    SamplerConfig,
)
from simulators.data import LIKE_THRESHOLD, InteractionLog, ItemMetadata, LogSplit
from simulators.logs import LoadReport, LoadWarning, load_logs
from simulators.registry import available, describe, make, register
from simulators.splits import k_core, leave_last_out, temporal_split, user_last_split, validation_split

__all__ = ["LIKE_THRESHOLD", "InteractionLog", "ItemMetadata", "LogSplit"]
__all__ += ["LoadReport", "LoadWarning", "k_core", "leave_last_out", "load_logs", "temporal_split"]
__all__ += ["user_last_split", "validation_split"]
__all__ += [
    "REWARDS",
    "BehaviourConfig",
    "ChoiceConfig",
    "InterestConfig",
    "LeaveConfig",
    "SamplerConfig",
    "Simulator",
    "StepOutcome",
    "UserState",
    "available",
    "describe",
    "make",
    "register",
]
