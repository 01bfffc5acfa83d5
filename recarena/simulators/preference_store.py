"""Build logged-user simulators on named data fast: fit the preference and choice models once, then reuse them.

The first ``gymnasium.make("recarena/ML1M-v1")`` on a machine fits the preference model with the
simulator's (default or given) ``preference`` config and saves it under
``$RECARENA_CACHE/preference/<data>-<key>/``, where ``key`` hashes the training log's fingerprint,
the preference config and the encoder options; with the learned choice (``choice.model: learned``)
it also fits the next-item model (``choice.sequence``) and saves it under
``$RECARENA_CACHE/choice/<data>-<key>/`` (key: training-log fingerprint, ``choice.sequence`` config,
encoder options). Every later construction loads them; a changed training log changes the key, so
the models are refitted. Fitting, encoding and loading are the simulator package's own functions:
this module only decides where the fitted models live.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

from recarena.core.config import from_dict, to_dict
from recarena.data.spec import data_spec
from recarena.data.splits import leave_last_out
from recarena.llm.encoder import EncoderConfig, encode_items
from recarena.llm.models import cache_root
from recarena.simulators.logged import LoggedConfig
from recarena.simulators.preference import META_FILE, fit_preference_model
from recarena.simulators.sequence import META_FILE as CHOICE_META_FILE
from recarena.simulators.sequence import fit_next_item_model

_SPLITS: dict[str, Any] = {}


def source_key(data: Any) -> str:
    """The data spec (a name, path, spec file or mapping: ``recarena.data.data_spec``) plus (name, size,
    mtime) of its files, so an edited log is read again."""
    return data_spec(data).key()


def clear_split_cache() -> None:
    """Forget the splits read so far in this process."""
    _SPLITS.clear()


def _split(data: Any) -> Any:
    """The leave-last-out split of a data spec (once per process and file version)."""
    key = source_key(data)
    if key not in _SPLITS:
        _SPLITS[key] = leave_last_out(data_spec(data).load())
    return _SPLITS[key]


def _directory(kind: str, data: Any, identity: dict[str, Any], cache_dir: str | Path | None) -> Path:
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(data_spec(data).path)).name or "data")
    return cache_root(cache_dir) / kind / f"{name}-{key}"


def preference_dir(data: Any, config: dict[str, Any], cache_dir: str | Path | None = None) -> Path:
    """Where the preference model for ``data`` and this logged-simulator ``config`` is cached."""
    typed = from_dict(LoggedConfig, config)
    identity = {
        "train": _split(data).train.fingerprint(),
        "preference": to_dict(typed.preference),
        "encoder": typed.encoder,
    }
    return _directory("preference", data, identity, cache_dir if cache_dir is not None else typed.cache_dir)


def choice_dir(data: Any, config: dict[str, Any], cache_dir: str | Path | None = None) -> Path:
    """Where the next-item (choice) model for ``data`` and this logged-simulator ``config`` is cached."""
    typed = from_dict(LoggedConfig, config)
    identity = {
        "train": _split(data).train.fingerprint(),
        "choice": to_dict(typed.choice.sequence),
        "encoder": typed.encoder,
    }
    return _directory("choice", data, identity, cache_dir if cache_dir is not None else typed.cache_dir)


def _announce(what: str, data: Any, directory: Path) -> None:
    label = data if isinstance(data, str) else data_spec(data).path
    print(f"recarena: fitting the {what} for '{label}' once; it is cached in {directory}", file=sys.stderr, flush=True)


def _item_embeddings(data: Any, typed: LoggedConfig) -> Any:
    return encode_items(_split(data).train.items, from_dict(EncoderConfig, typed.encoder, prefix="encoder."), typed.cache_dir)


def ensure_preference_model(data: Any, config: dict[str, Any]) -> Path:
    """The cached preference model directory for ``data`` and ``config``, fitting it if absent."""
    directory = preference_dir(data, config)
    if (directory / META_FILE).is_file():  # written last by PreferenceModel.save: a complete save
        return directory
    typed = from_dict(LoggedConfig, config)
    _announce("preference model", data, directory)
    model = fit_preference_model(_split(data).train, _item_embeddings(data, typed), typed.preference)
    model.save(directory)
    return directory


def ensure_choice_model(data: Any, config: dict[str, Any]) -> Path:
    """The cached next-item model directory for ``data`` and ``config``, fitting it if absent.

    Fitted on the split's training events, early-stopped on its validation events."""
    directory = choice_dir(data, config)
    if (directory / CHOICE_META_FILE).is_file():  # written last by NextItemModel.save
        return directory
    typed = from_dict(LoggedConfig, config)
    split = _split(data)
    _announce("choice (next-item) model", data, directory)
    model = fit_next_item_model(split.train, _item_embeddings(data, typed), typed.choice.sequence, valid=split.valid)
    model.save(directory)
    return directory


def logged_simulator_arguments(data: Any, config: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``(data, config)`` for ``recarena.simulators.make("logged", ...)`` that reuse the cached models."""
    typed = from_dict(LoggedConfig, config)
    split = _split(data)
    learned = typed.choice.model == "learned"
    uses_ratings = not learned or typed.choice.rating == "on" or (typed.choice.rating == "auto" and split.train.has_ratings)
    extra: dict[str, Any] = {}
    if uses_ratings and typed.preference_path is None:
        extra["preference_path"] = str(ensure_preference_model(data, config))
    if learned and typed.choice_path is None:
        extra["choice_path"] = str(ensure_choice_model(data, config))
    return split, {**config, **extra}
