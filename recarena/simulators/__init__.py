"""User simulators built from real logged interactions and an LLM-derived preference model."""

from recarena.simulators.base import Simulator, StepOutcome, UserState
from recarena.simulators.behaviour import (
    REWARDS,
    BehaviourConfig,
    ChoiceConfig,
    InterestConfig,
    LeaveConfig,
    SamplerConfig,
)
from recarena.simulators.registry import available, describe, make, register

__all__ = [
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
