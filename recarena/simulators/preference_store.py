"""Build logged-user simulators on named data fast: fit the preference and choice models once, then reuse them.

The first ``gymnasium.make("recarena/ML1M-v1")`` on a machine fits the preference model with the
simulator's (default or given) ``preference`` config and saves it under
``$RECARENA_CACHE/preference/<data>-<key>/``, where ``key`` hashes the training log's fingerprint,
the preference config and the encoder options; with the learned choice (``choice.model: learned``)
it also fits the next-item model (``choice.sequence``) and saves it under
``$RECARENA_CACHE/choice/<data>-<key>/`` (key: training-log fingerprint, ``choice.sequence`` config,
encoder options). Both keys also hold the model code's ``FORMAT_VERSION`` and ``FIT_REVISION``. Every
later construction loads them; a changed training log, config or fitting code changes the key, so
the models are refitted. Before each one-time fit (and the item encoding) one line on stderr says
what is fitted for which data, the size of the job, its expected duration on a 2-core CPU with one
torch thread (rates measured with ``bench/first_use.py``) and the cache directory. Fitting, encoding and loading are the simulator package's own functions:
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
from recarena.llm.encoder import EncoderConfig, encode_items
from recarena.llm.models import cache_root
from recarena.simulators import preference as preference_code
from recarena.simulators import sequence as sequence_code
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
    """The split of a data spec (its ``split``: leave-last-out by default), once per process and file version."""
    key = source_key(data)
    if key not in _SPLITS:
        _SPLITS[key] = data_spec(data).load_split()
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
        "code": [preference_code.FORMAT_VERSION, preference_code.FIT_REVISION],
    }
    return _directory("preference", data, identity, cache_dir if cache_dir is not None else typed.cache_dir)


def choice_dir(data: Any, config: dict[str, Any], cache_dir: str | Path | None = None) -> Path:
    """Where the next-item (choice) model for ``data`` and this logged-simulator ``config`` is cached."""
    typed = from_dict(LoggedConfig, config)
    identity = {
        "train": _split(data).train.fingerprint(),
        "choice": to_dict(typed.choice.sequence),
        "encoder": typed.encoder,
        "code": [sequence_code.FORMAT_VERSION, sequence_code.FIT_REVISION],
    }
    return _directory("choice", data, identity, cache_dir if cache_dir is not None else typed.cache_dir)


# Seconds per epoch per training event and per 1,000 catalogue items (both fits cost in proportion
# to the catalogue too: the next-item model's full softmax, the preference model's item table), measured
# with bench/first_use.py on the 2-core CPU machine, 1 torch thread, nice 10, shared with other jobs
# (docs/benchmarks.md, "First use"): preference 4.5e-6 on ML-100K (0.75 s/epoch) and on ML-1M
# (17 s/epoch); next-item 4.0e-5 on ML-100K (6.6 s/epoch) and 4.1e-5 on ML-1M (156 s for the first epoch).
PREFERENCE_SECONDS_PER_EVENT_KITEM_EPOCH = 4.5e-6
CHOICE_SECONDS_PER_EVENT_KITEM_EPOCH = 4.0e-5


def _label(data: Any) -> str:
    return data if isinstance(data, str) else str(data_spec(data).path)


def _minutes(seconds: float) -> str:
    if seconds < 1:
        return "under 1 s"
    return f"about {seconds:.0f} s" if seconds < 90 else f"about {seconds / 60:.0f} min"


def _estimate(per_epoch: float, epochs: int, early_stopping: bool) -> str:
    """What a fit is expected to take: per epoch, and in all (an upper bound with early stopping)."""
    total = per_epoch * epochs
    if early_stopping:
        return (f"{_minutes(per_epoch)} per epoch, at most {epochs} epochs (early stopping may end it "
                f"sooner): up to {_minutes(total)}")
    return f"{_minutes(per_epoch)} per epoch for {epochs} epochs: {_minutes(total)}"


def _announce(what: str, data: Any, directory: Path, work: str, estimate: str) -> None:
    """One line on stderr before a one-time fit: what, for which data, where it is cached, how long."""
    print(
        f"recarena: fitting the {what} for '{_label(data)}' once; it is cached in {directory} "
        f"({work}; expected on a 2-core CPU with 1 torch thread: {estimate}; later builds load it in seconds)",
        file=sys.stderr, flush=True,
    )


def _item_embeddings(data: Any, typed: LoggedConfig) -> Any:
    return encode_items(_split(data).train.items, from_dict(EncoderConfig, typed.encoder, prefix="encoder."), typed.cache_dir)


def ensure_preference_model(data: Any, config: dict[str, Any]) -> Path:
    """The cached preference model directory for ``data`` and ``config``, fitting it if absent."""
    directory = preference_dir(data, config)
    if (directory / META_FILE).is_file():  # written last by PreferenceModel.save: a complete save
        return directory
    typed = from_dict(LoggedConfig, config)
    train = _split(data).train
    per_epoch = PREFERENCE_SECONDS_PER_EVENT_KITEM_EPOCH * train.n_events * train.n_items / 1000
    work = f"{train.n_events:,} training ratings of {train.n_users:,} users, {train.n_items:,} items"
    item_embeddings = _item_embeddings(data, typed)  # announces its own one-time encoding
    _announce("preference model", data, directory, work, _estimate(per_epoch, typed.preference.epochs, False))
    model = fit_preference_model(train, item_embeddings, typed.preference)
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
    train, sequence = split.train, typed.choice.sequence
    per_epoch = CHOICE_SECONDS_PER_EVENT_KITEM_EPOCH * train.n_events * train.n_items / 1000
    work = f"{train.n_events:,} training events, {train.n_items:,} items"
    item_embeddings = _item_embeddings(data, typed)  # announces its own one-time encoding
    _announce("choice (next-item) model", data, directory, work, _estimate(per_epoch, sequence.epochs, split.valid.n_events > 0))
    model = fit_next_item_model(split.train, item_embeddings, typed.choice.sequence, valid=split.valid)
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
