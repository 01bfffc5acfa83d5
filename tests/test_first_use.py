"""First use as a library: torch's thread default, and one-time work announced before it starts."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import recarena  # noqa: F401  (registers the env ids)
import recarena.simulators as simulators
from recarena.core import seeding
from recarena.envs.common import clear_simulator_cache
from recarena.llm.encoder import EncoderConfig, encode_texts


@pytest.fixture
def torch_threads(monkeypatch):
    """torch at 2 threads and recarena's thread setting undone, as in a fresh process where the user
    (or torch's own default on a 2-core machine) left 2; restored afterwards."""
    before = torch.get_num_threads()
    monkeypatch.setattr(seeding, "_threads_configured", False, raising=False)
    monkeypatch.delenv("RECARENA_TORCH_THREADS", raising=False)
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_building_a_simulator_gives_torch_one_thread(torch_threads) -> None:
    env = gym.make("recarena/Synthetic-v0")  # library use: no CLI configured torch
    assert torch.get_num_threads() == 1
    env.close()


def test_the_thread_count_follows_the_environment_variable(torch_threads, monkeypatch) -> None:
    monkeypatch.setenv("RECARENA_TORCH_THREADS", "2")
    torch.set_num_threads(1)
    simulators.make("synthetic")
    assert torch.get_num_threads() == 2


def test_a_thread_count_the_user_configured_first_is_kept(torch_threads) -> None:
    seeding.configure_torch_threads(2)
    simulators.make("synthetic")
    assert torch.get_num_threads() == 2


def write_ratings(folder: Path, n_users: int = 12, n_items: int = 15, seed: int = 0) -> Path:
    """A tiny MovieLens-latest folder (ratings.csv, movies.csv)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["userId,movieId,rating,timestamp"]
    for user in range(n_users):
        for t, item in enumerate(rng.choice(n_items, size=10, replace=False)):
            rows.append(f"{user + 1},{item + 1},{int(rng.integers(1, 6))},{1_000_000 + 100 * user + t}")
    (folder / "ratings.csv").write_text("\n".join(rows) + "\n")
    movies = ["movieId,title,genres"] + [f"{i + 1},Film {i + 1} (1990),{'Drama' if i % 2 else 'Comedy'}" for i in range(n_items)]
    (folder / "movies.csv").write_text("\n".join(movies) + "\n")
    return folder


def test_one_time_fits_are_announced_once_with_duration_and_cache_path(tmp_path: Path, monkeypatch, capsys) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("RECARENA_CACHE", str(cache))
    data = str(write_ratings(tmp_path / "tiny"))
    config = {"preference": {"epochs": 1}, "choice": {"sequence": {"epochs": 1, "dim": 8}}, "encoder": {"progress": False}}
    clear_simulator_cache()
    gym.make("recarena/ML100K-v1", data=data, simulator_config=config).close()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("recarena: fitting")]
    assert len(lines) == 2, lines
    preference, choice = lines
    assert preference.startswith(f"recarena: fitting the preference model for '{data}' once; it is cached in {cache}/preference/tiny-")
    assert "training ratings of 12 users, 15 items; expected on a 2-core CPU with 1 torch thread: under 1 s per epoch for 1 epochs: under 1 s;" in preference
    assert preference.endswith("later builds load it in seconds)")
    assert choice.startswith(f"recarena: fitting the choice (next-item) model for '{data}' once; it is cached in {cache}/choice/tiny-")
    assert "15 items; expected on a 2-core CPU with 1 torch thread: under 1 s per epoch, at most 1 epochs" in choice
    clear_simulator_cache()
    gym.make("recarena/ML100K-v1", data=data, simulator_config=config).close()
    assert "recarena: fitting" not in capsys.readouterr().err  # cached: said once


def test_a_one_time_encoding_is_announced_once(tmp_path: Path, capsys) -> None:
    texts = [f"item number {i}" for i in range(40)]
    config = EncoderConfig(batch_size=16)
    encode_texts(texts, config, cache_dir=tmp_path)
    err = capsys.readouterr().err
    assert "recarena: encoding 40 texts with the 'minilm' encoder once (expected under 1 s on a 2-core CPU with 1 torch thread); " \
           f"they are cached in {tmp_path}/embeddings/" in err
    encode_texts(texts, config, cache_dir=tmp_path)
    assert "recarena: encoding" not in capsys.readouterr().err
