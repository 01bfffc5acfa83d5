"""Pieces shared by the single-user env and the vector env: options, simulator construction,
reward functions and action validation.

Everything here works on batches of tensors, so the single env (the batch of one) and the vector
env run exactly the same code.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from copy import deepcopy
from dataclasses import field, fields
from difflib import get_close_matches
from typing import Annotated, Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector.utils import batch_space
from pydantic import Field, field_validator

import recarena.simulators as simulators
from recarena.core.config import config_dataclass, from_dict
from recarena.core.errors import ConfigError
from recarena.simulators.base import Simulator, StepOutcome
from recarena.simulators.behaviour import REWARDS
from recarena.simulators.preference_store import clear_split_cache, logged_simulator_arguments, source_key
from recarena.simulators.registry import LOGGED_USERS
from recarena.simulators.registry import get as simulator_class

OBSERVATION_KEYS = ("history", "responses", "llm_state")
INT64_MAX = 2**63 - 1
"""Counters and indices are int64 tensors: a larger integer option is refused, as given."""


def reward_function(name: str | None) -> Callable[[StepOutcome], torch.Tensor]:
    """The env's reward: the simulator's own configured reward (``None``) or a named one.

    Names are those of ``recarena.simulators.behaviour.REWARDS`` ("click", "like", "rating", "dwell"), computed
    from the step's outcome, so one simulator instance can serve envs with different rewards.
    """
    if name is None:
        return lambda outcome: outcome.reward
    function = REWARDS[name]
    return lambda outcome: function(outcome.clicked, outcome.liked, outcome.response)


@config_dataclass
class EnvOptions:
    """The options every recarena env accepts (see ``docs/envs.md``)."""

    simulator: Any = "synthetic"  # registry name (str) or a ready Simulator instance
    data: str | dict[str, Any] | None = None  # data spec (recarena.data.data_spec): "ml-1m", a path, a spec file or a mapping
    simulator_config: dict[str, Any] = field(default_factory=dict)
    slate_size: Annotated[int, Field(ge=1, le=INT64_MAX)] = 1
    max_steps: Annotated[int, Field(ge=1, le=INT64_MAX)] = 50  # session cap: reaching it truncates the episode
    reward: str | None = None  # None = the simulator's configured reward; else a simulators.REWARDS name
    history_length: Annotated[int, Field(ge=1, le=INT64_MAX)] | None = None  # observation window; None = the simulator's
    observation_keys: tuple[str, ...] = OBSERVATION_KEYS
    mask_consumed: bool = True  # action mask marks already-consumed items as unavailable
    validate_actions: bool = True
    device: str = "cpu"

    @field_validator("simulator")
    @classmethod
    def _name_or_simulator(cls, simulator: Any) -> Any:
        if not isinstance(simulator, (str, Simulator)):
            raise ValueError(f"must be a registry name or a Simulator, got {simulator!r}")
        return simulator

    @field_validator("data", mode="before")
    @classmethod
    def _data_spec(cls, data: Any) -> Any:
        """Checked here (unknown keys, types), before anything is loaded; kept as plain data."""
        from recarena.data.spec import DataSpec, data_spec

        if isinstance(data, DataSpec):
            return data.to_value()
        if isinstance(data, os.PathLike):
            data = os.fspath(data)
        if data is not None:
            data_spec(data, prefix="data.")
        return dict(data) if isinstance(data, Mapping) else data

    @field_validator("device")
    @classmethod
    def _usable_device(cls, device: str) -> str:
        from recarena.core.seeding import resolve_device

        if device not in ("auto", "cpu") and not re.fullmatch(r"cuda(:\d+)?", device):
            raise ValueError(f"must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        try:
            resolve_device(device)
        except (RuntimeError, ValueError) as error:
            raise ValueError(str(error)) from None
        return device

    @field_validator("reward")
    @classmethod
    def _known_reward(cls, reward: str | None) -> str | None:
        if reward is not None and reward not in REWARDS:
            raise ValueError(f"must be None or one of {sorted(REWARDS)}, got {reward!r}")
        return reward

    @field_validator("observation_keys")
    @classmethod
    def _known_distinct_keys(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        if not keys or any(k not in OBSERVATION_KEYS for k in keys) or len(set(keys)) != len(keys):
            raise ValueError(f"must be distinct names from {list(OBSERVATION_KEYS)}, got {list(keys)}")
        return keys


def parse_options(**kwargs: Any) -> EnvOptions:
    """Validate env keyword arguments into :class:`EnvOptions`; see :func:`check_options`."""
    return check_options(kwargs)


def check_options(
    kwargs: Mapping[str, Any], prefix: str = "", simulator_prefix: str | None = None
) -> EnvOptions:
    """Validate env options, before any data is loaded or model fitted, into :class:`EnvOptions`.

    Checks the options themselves (unknown names, with a suggestion; types and ranges), the device
    (``"cuda"`` without CUDA), the ``simulator_config`` against the named simulator's config class
    and ``history_length`` against that config's window: what would otherwise fail only after
    the data were loaded. Errors are :class:`ConfigError` naming the key as the caller knows it:
    ``prefix + name`` (``gymnasium.make`` keyword arguments: no prefix, e.g. ``"max_steps: must be
    >= 1, got 0"``; a run config's env section: ``prefix="env."``), simulator options after
    ``simulator_prefix`` (default ``prefix + "simulator_config."``).
    """
    kwargs = dict(kwargs)
    names = [f.name for f in fields(EnvOptions)]
    unknown = sorted(set(kwargs) - set(names), key=str)
    if unknown:
        hints = [f"'{prefix}{close[0]}'" for key in unknown if (close := get_close_matches(str(key), names, n=1))]
        hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
        raise ConfigError(f"unknown env option(s) {[prefix + str(k) for k in unknown]}{hint}; the options are {names}")
    kwargs = {key: value.item() if isinstance(value, np.generic) else value for key, value in kwargs.items()}
    if kwargs.get("simulator_config") is None:
        kwargs.pop("simulator_config", None)
    if "observation_keys" in kwargs and isinstance(kwargs["observation_keys"], (list, tuple)):
        kwargs["observation_keys"] = list(kwargs["observation_keys"])
    options = from_dict(EnvOptions, kwargs, prefix=prefix)
    if isinstance(options.simulator, str):
        simulator_prefix = f"{prefix}simulator_config." if simulator_prefix is None else simulator_prefix
        typed = from_dict(simulator_class(options.simulator).config_class, simulator_config(options), prefix=simulator_prefix)
        window = getattr(typed, "history_length", None)
        if isinstance(window, int) and options.history_length is not None and options.history_length > window:
            raise ConfigError(
                f"{prefix}history_length: {options.history_length} exceeds the simulator's history length "
                f"({simulator_prefix}history_length = {window}); raise that instead"
            )
    return options


def simulator_config(options: EnvOptions) -> dict[str, Any]:
    """The config the named simulator is built with: ``simulator_config``, plus the env's
    ``history_length`` where that config has a window and does not set it."""
    config = dict(options.simulator_config)
    if options.history_length is not None and "history_length" not in config:
        if any(f.name == "history_length" for f in fields(simulator_class(options.simulator).config_class)):
            config["history_length"] = options.history_length
    return config


_SIMULATORS: dict[str, Simulator] = {}
"""Simulators built by :func:`build_simulator`, shared within the process (see there)."""


def clear_simulator_cache() -> None:
    """Forget the shared simulators (and the preference store's splits): the next env builds afresh."""
    _SIMULATORS.clear()
    clear_split_cache()


def build_simulator(options: EnvOptions) -> Simulator:
    """The simulator the options name, shared within the process.

    Simulators are stateless apart from their fitted parameters (the users' state lives in a
    ``UserState``), so every env built with the same name, data, device and config shares one
    instance: building a SyncVectorEnv of many copies, or a second env, costs nothing.
    """
    if isinstance(options.simulator, Simulator):
        return options.simulator

    config = simulator_config(options)
    data_key = source_key(options.data) if options.data is not None else None
    key = json.dumps([options.simulator, data_key, options.device, config], sort_keys=True, default=str)
    if key not in _SIMULATORS:
        data: Any = options.data
        if options.simulator in LOGGED_USERS and data is not None:
            # Named data: fit the preference model once and load it from $RECARENA_CACHE afterwards.
            data, config = logged_simulator_arguments(data, config)
        _SIMULATORS[key] = simulators.make(options.simulator, data=data, device=options.device, **config)
    return _SIMULATORS[key]


def resolve_history_length(options: EnvOptions, simulator: Simulator) -> int:
    """The observation window: at most the simulator's own history length."""
    if options.history_length is None:
        return int(simulator.history_length)
    if options.history_length > simulator.history_length:
        raise ConfigError(
            f"history_length={options.history_length} exceeds the simulator's history length "
            f"({simulator.history_length}); raise it in simulator_config instead"
        )
    return int(options.history_length)


class SlateSpace(spaces.MultiDiscrete):
    """``MultiDiscrete([n_items] * k)`` whose members hold k *distinct* items.

    It is a ``MultiDiscrete`` (SB3 and Gymnasium treat it as one), but :meth:`sample` draws
    without replacement and :meth:`contains` rejects slates with repeated items, so samples are
    always valid actions of the env.
    """

    def __init__(self, n_items: int, slate_size: int, seed: int | np.random.Generator | None = None) -> None:
        if not 1 <= slate_size <= n_items:
            raise ValueError(f"slate_size must be in [1, n_items={n_items}], got {slate_size}")
        super().__init__(np.full(slate_size, n_items, dtype=np.int64), dtype=np.int64, seed=seed)
        self.n_items, self.slate_size = int(n_items), int(slate_size)

    def sample(self, mask: Any = None, probability: Any = None) -> np.ndarray:
        if mask is None and probability is None:
            return self.np_random.choice(self.n_items, size=self.slate_size, replace=False).astype(np.int64)
        for _ in range(1000):  # masked/weighted draws: resample until the items are distinct
            slate = super().sample(mask=mask, probability=probability)
            if len(np.unique(slate)) == self.slate_size:
                return slate
        raise ValueError("could not sample a slate of distinct items under this mask")

    def contains(self, x: Any) -> bool:
        return super().contains(x) and len(np.unique(np.asarray(x))) == self.slate_size

    def __repr__(self) -> str:
        return f"SlateSpace(n_items={self.n_items}, slate_size={self.slate_size})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, SlateSpace) and (other.n_items, other.slate_size) == (
            self.n_items,
            self.slate_size,
        )


def distinct_rows(rng: np.random.Generator, rows: int, n_items: int, k: int) -> np.ndarray:
    """Int64 [rows, k]: each row k distinct items drawn uniformly from [0, n_items), in draw order.

    Vectorised over the rows: the j-th item is a uniform index among the n_items - j items not yet in
    its row, mapped past the chosen ones (for small k); random sort keys otherwise.
    """
    if k > 32:
        chunk = max(1, (1 << 22) // n_items)  # bound the [chunk, n_items] keys to ~32 MB
        return np.concatenate(
            [np.argsort(rng.random((min(chunk, rows - start), n_items)), axis=1)[:, :k] for start in range(0, rows, chunk)]
        ).astype(np.int64)
    slates = np.empty((rows, k), dtype=np.int64)
    for j in range(k):
        index = rng.integers(0, n_items - j, size=rows)
        for chosen in np.sort(slates[:, :j], axis=1).T:  # ascending: skip each item already taken
            index += chosen <= index
        slates[:, j] = index
    return slates


class SlateBatchSpace(spaces.Box):
    """The batched :class:`SlateSpace`: ``Box(0, n_items - 1, (N, k), int64)`` whose rows are slates.

    What ``gymnasium.vector.utils.batch_space`` makes of a :class:`SlateSpace` (registered below), so
    the vector env's ``action_space`` and that of Gymnasium's ``SyncVectorEnv``/``AsyncVectorEnv``
    over the single env follow the single env's slate semantics: :meth:`sample` draws k distinct
    items in every row and :meth:`contains` rejects a row with a repeated item. As a ``Box`` (what
    Gymnasium makes of a batched ``MultiDiscrete``) the rest of Gymnasium treats it as before.
    """

    def __init__(
        self, n_items: int, slate_size: int, num_envs: int, seed: int | np.random.Generator | None = None
    ) -> None:
        if not 1 <= slate_size <= n_items:
            raise ValueError(f"slate_size must be in [1, n_items={n_items}], got {slate_size}")
        super().__init__(low=0, high=n_items - 1, shape=(num_envs, slate_size), dtype=np.int64, seed=seed)
        self.n_items, self.slate_size, self.num_envs = int(n_items), int(slate_size), int(num_envs)

    def sample(self, mask: None = None, probability: None = None) -> np.ndarray:
        if mask is not None or probability is not None:
            raise gym.error.Error(
                "SlateBatchSpace.sample takes no mask or probability; sample each row from the single "
                "env's SlateSpace (vector_env.single_action_space) instead"
            )
        return distinct_rows(self.np_random, self.num_envs, self.n_items, self.slate_size)

    def contains(self, x: Any) -> bool:
        if not super().contains(x):
            return False
        ordered = np.sort(np.asarray(x), axis=1)
        return not bool((ordered[:, 1:] == ordered[:, :-1]).any())

    def __repr__(self) -> str:
        return f"SlateBatchSpace(n_items={self.n_items}, slate_size={self.slate_size}, num_envs={self.num_envs})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, SlateBatchSpace) and (other.n_items, other.slate_size, other.num_envs) == (
            self.n_items,
            self.slate_size,
            self.num_envs,
        )


@batch_space.register(SlateSpace)
def _batch_slate_space(space: SlateSpace, n: int = 1) -> SlateBatchSpace:
    return SlateBatchSpace(space.n_items, space.slate_size, n, seed=deepcopy(space.np_random))


_INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
_INT64 = np.iinfo(np.int64)


def action_array(actions: Any, n_items: int) -> np.ndarray:
    """Actions (NumPy array, list, Python/NumPy int) as an int64 NumPy array of the same shape.

    Raises ``TypeError`` for non-integer dtypes (floats, NaN, bools, objects) and ``ValueError``,
    naming the numbers as given, for integers outside int64 (which NumPy would otherwise turn into
    floats or wrap around to negative numbers).
    """
    if isinstance(actions, (bool, np.bool_)):
        raise TypeError(f"actions must be integer item indices, got the bool {actions!r}")
    if isinstance(actions, (int, list, tuple)) or (isinstance(actions, np.ndarray) and actions.dtype == object):
        try:
            flat = np.asarray(actions, dtype=object).reshape(-1).tolist()
        except ValueError:  # ragged: let the dtype check below report it
            flat = []
        if flat and all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in flat):
            if any(not _INT64.min <= int(v) <= _INT64.max for v in flat):
                given = flat[0] if isinstance(actions, int) else flat
                raise ValueError(f"action out of range: expected item indices in [0, {n_items}), got {given}")
            return np.asarray(actions, dtype=np.int64)
    array = np.asarray(actions)
    if array.dtype.kind not in "iu":
        raise TypeError(f"actions must be integer item indices (dtype int64), got dtype {array.dtype}")
    if array.dtype == np.uint64 and array.size and int(array.max()) > _INT64.max:
        given = int(array) if array.ndim == 0 else array.tolist()
        raise ValueError(f"action out of range: expected item indices in [0, {n_items}), got {given}")
    return np.ascontiguousarray(array, dtype=np.int64)


def as_action_tensor(actions: Any, device: torch.device, n_items: int) -> torch.Tensor:
    """Turn actions (tensor, numpy array, list, Python/NumPy int) into a tensor on ``device``.

    Raises ``TypeError`` for non-integer dtypes (floats, NaN, bools, objects), and ``ValueError``
    for integers beyond int64 (see :func:`action_array`).
    """
    if isinstance(actions, torch.Tensor):
        tensor = actions
    else:
        tensor = torch.from_numpy(action_array(actions, n_items))
    if tensor.dtype not in _INTEGER_DTYPES:
        raise TypeError(f"actions must be integer item indices (dtype int64), got dtype {tensor.dtype}")
    return tensor.to(device=device, dtype=torch.int64)


def check_slates(slate: torch.Tensor, n_items: int) -> None:
    """Raise ``ValueError`` unless every row of ``slate`` [B, k] holds distinct items in [0, n_items).

    The checks are tensor ops with one host synchronisation (the final ``bool``); the message
    is only built on the error path.
    """
    out_of_range = (slate < 0) | (slate >= n_items)
    bad = out_of_range.any()
    duplicate = None
    if slate.shape[1] > 1:
        ordered = slate.sort(dim=1).values
        duplicate = (ordered[:, 1:] == ordered[:, :-1]).any(dim=1)
        bad = bad | duplicate.any()
    if not bool(bad):
        return
    rows = out_of_range.any(dim=1).nonzero().flatten()
    if len(rows):
        row = int(rows[0])
        raise ValueError(
            f"action out of range: expected item indices in [0, {n_items}), got {slate[row].tolist()} "
            f"(env {row})"
        )
    row = int(duplicate.nonzero().flatten()[0])  # type: ignore[union-attr]
    raise ValueError(
        f"a slate must hold {slate.shape[1]} distinct items, got {slate[row].tolist()} (env {row})"
    )
