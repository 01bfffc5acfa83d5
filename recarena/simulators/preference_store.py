"""Build logged-user simulators on named data fast: fit the preference model once, then reuse it.

The first ``gymnasium.make("recarena/ML1M-v0")`` on a machine fits the preference model with the
simulator's (default or given) ``preference`` config and saves it under
``$RECARENA_CACHE/preference/<data>-<key>/``, where ``key`` hashes the training log's fingerprint,
the preference config and the encoder options; every later construction loads it. Fitting,
encoding and loading are the simulator package's own functions: this module only decides where
the fitted model lives.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from recarena.core.config import from_dict, to_dict
from recarena.data.logs import load_logs
from recarena.data.splits import leave_last_out
from recarena.llm.encoder import EncoderConfig, encode_items
from recarena.llm.models import cache_root
from recarena.simulators.logged import LoggedConfig
from recarena.simulators.preference import META_FILE, fit_preference_model

_SPLITS: dict[tuple[str, tuple[tuple[str, int, int], ...]], Any] = {}


def source_key(data: str) -> tuple[str, tuple[tuple[str, int, int], ...]]:
    """``data`` plus (name, size, mtime) of the files at that path, so an edited log is read again."""
    path = Path(data).expanduser()
    if not path.exists():
        return data, ()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return str(path.resolve()), tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)


def clear_split_cache() -> None:
    """Forget the splits read so far in this process."""
    _SPLITS.clear()


def _split(data: str) -> Any:
    """The leave-last-out split of a named or path data source (once per process and file version)."""
    key = source_key(data)
    if key not in _SPLITS:
        _SPLITS[key] = leave_last_out(load_logs(data))
    return _SPLITS[key]


def preference_dir(data: str, config: dict[str, Any], cache_dir: str | Path | None = None) -> Path:
    """Where the preference model for ``data`` and this logged-simulator ``config`` is cached."""
    typed = from_dict(LoggedConfig, config)
    train = _split(data).train
    identity = {
        "train": train.fingerprint(),
        "preference": to_dict(typed.preference),
        "encoder": typed.encoder,
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(data)).name or "data")
    return (
        cache_root(cache_dir if cache_dir is not None else typed.cache_dir) / "preference" / f"{name}-{key}"
    )


def ensure_preference_model(data: str, config: dict[str, Any]) -> Path:
    """The cached preference model directory for ``data`` and ``config``, fitting it if absent."""
    directory = preference_dir(data, config)
    if (directory / META_FILE).is_file():  # written last by PreferenceModel.save: a complete save
        return directory
    typed = from_dict(LoggedConfig, config)
    train = _split(data).train
    embeddings = encode_items(
        train.items, from_dict(EncoderConfig, typed.encoder, prefix="encoder."), typed.cache_dir
    )
    model = fit_preference_model(train, embeddings, typed.preference)
    model.save(directory)
    return directory


def logged_simulator_arguments(data: str, config: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``(data, config)`` for ``recarena.simulators.make("logged", ...)`` that reuse the cached model."""
    if "preference_path" in config and config["preference_path"] is not None:
        return _split(data), config
    return _split(data), {**config, "preference_path": str(ensure_preference_model(data, config))}
